"""iggt_ros.bag"""
