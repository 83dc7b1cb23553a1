"""iggt_ros.eval"""
