"""iggt_ros.perception"""
