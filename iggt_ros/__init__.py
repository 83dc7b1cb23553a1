"""iggt_ros: instance-grounded 3D perception for ROS 2 (IGGT on sliding multi-view windows)."""

__version__ = "0.1.0"
