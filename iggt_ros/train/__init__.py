"""iggt_ros.train"""
