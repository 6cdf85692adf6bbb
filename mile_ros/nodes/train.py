"""The `train` node (`ros2 run mile_ros train --bags DIR ...`).

The trainer's command line (`mile_ros.tools.train`), which delivers the checkpoint through
`mile_ros.policy.delivery`.
"""
from __future__ import annotations

import sys

from mile_ros.tools.train import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
