"""iggt_ros.synthetic"""
