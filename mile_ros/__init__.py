"""mile_ros: MILE (Model-based Intervention Learning) on an Interbotix WidowX 250 6DOF with ROS 2.

The learning core (`mile_ros.learning.mile`, `mile_ros.learning`,
`mile_ros.learning.checkpoint`) is plain torch/numpy and imports no ROS; the nodes in
`mile_ros.nodes` are thin rclpy wrappers.
"""
__version__ = "0.1.0"
