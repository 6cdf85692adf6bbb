"""Serving a policy (loaded checkpoints, runners, validation) and delivering checkpoints over ROS."""
