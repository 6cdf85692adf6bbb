"""The `mile-ros` command: the package's nodes and tools without a ROS 2 distribution.

    mile-ros demo | collect | train | bench | eval-interventions | <node> [--ros-args ...]

Each subcommand lives in its own module and is imported only when used.
"""
from __future__ import annotations

import importlib
import sys

from mile_ros.nodes import NODES
from mile_ros.params import ConfigError

TOOLS = {  # subcommand -> (module, one-line help)
    "demo": ("mile_ros.tools.demo", "collect -> train -> hot-swap loop on the simulated arm"),
    "collect": ("mile_ros.tools.collect",
                "start the collection graph (same nodes and YAML as the launch file)"),
    "train": ("mile_ros.tools.train", "train MILE on episode bags and deliver the checkpoint"),
    "bench": ("mile_ros.benchmark.cli", "the paper's simulation benchmarks against baselines"),
    "eval-interventions": ("mile_ros.tools.eval_interventions",
                           "how well models predict interventions"),
}


def usage() -> str:
    lines = ["usage: mile-ros <command> [args]", "", "commands:"]
    lines += [f"  {name:<20}{help_}" for name, (_, help_) in TOOLS.items()]
    lines += ["", "nodes (as `ros2 run mile_ros <node>`):", "  " + " ".join(NODES)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command in TOOLS:
        module = TOOLS[command][0]
    elif command in NODES:
        module = f"mile_ros.nodes.{command}"
    else:
        print(f"mile-ros: unknown command '{command}'\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        entry = importlib.import_module(module).main
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("mile_ros"):
            print(f"mile-ros {command}: not implemented yet", file=sys.stderr)
            return 3
        raise
    try:
        return int(entry(rest) or 0)
    except ConfigError as e:
        print(f"mile-ros {command}: configuration error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
