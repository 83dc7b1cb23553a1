"""iggt_ros.engine"""
