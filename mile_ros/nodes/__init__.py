"""rclpy nodes, one module per node.

Each is a small Node subclass with `main(argv=None)` (a console script), started through the one
start-up path in `_runtime`. No node imports another.

`NODES` is the one list of them: setup.py makes a console script of each (`ros2 run mile_ros
<node>`) and `mile-ros <node>` dispatches to the same `main`.
"""
NODES = ("arm", "camera", "joystick", "arbiter", "policy_server", "recorder", "train", "sim_human",
         "checkpoint_store")
