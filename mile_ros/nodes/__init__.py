"""rclpy nodes, one module per node, each with `main(argv=None)` (a console script)."""
