"""iggt_ros.vlm"""
