"""Serving a policy and delivering checkpoints over ROS.

Serving: loaded checkpoints, runners, validation.
"""
