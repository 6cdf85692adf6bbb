"""The ROS-free learning core: MILE's math, networks, observation specs, the training loop and checkpoints."""
