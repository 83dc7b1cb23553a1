"""iggt_ros.ros"""
