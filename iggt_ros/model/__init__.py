"""iggt_ros.model"""
