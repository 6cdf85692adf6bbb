"""The one start-up and shutdown path of every node (and of the trainer's checkpoint sender).

`run_node(name, build, argv)` initialises a context of the node's own with its `--ros-args` and
rclpy's SIGINT/SIGTERM handlers, builds the node (`build(context=...)`), spins it until Ctrl-C /
SIGTERM / the node asks to stop, and turns configuration problems into one line on stderr,
`<node>: configuration error: ...`, with exit status 2, instead of a traceback.
"""
from __future__ import annotations

import sys
from typing import Callable

from mile_ros.params import ConfigError

EXIT_CONFIG = 2


def init_rclpy(args: list[str], context=None, **kwargs) -> None:
    """Call rclpy.init, with malformed --ros-args raised as a ConfigError.

    Malformed --ros-args (a missing or invalid params file, `-p name` without `:=value`) are
    raised as a ConfigError instead of rcl's traceback.
    """
    import re

    import rclpy
    from rclpy.impl.implementation_singleton import rclpy_implementation

    try:
        rclpy.init(args=args, context=context, **kwargs)
    except rclpy_implementation.RCLError as e:
        text = re.sub(r", at \S+:\d+", "", str(e)).removeprefix("failed to initialize rcl: ")
        raise ConfigError(f"bad --ros-args: {text}") from None


def open_context(args: list[str], signal_handlers: bool = False):
    """Open a new rclpy context initialised with `args` (its `--ros-args`).

    With `signal_handlers`, rclpy's SIGINT/SIGTERM handlers shut it down (they are installed only
    for the default context unless asked).
    """
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    context = rclpy.Context()
    options = SignalHandlerOptions.ALL if signal_handlers else SignalHandlerOptions.NO
    init_rclpy(args, context=context, signal_handler_options=options)
    return context


def run_node(name: str, build: Callable, argv: list[str] | None = None, executor_cls=None) -> int:
    """Build the node and run it; return the exit status.

    `build(context=context)` returns a node with an optional `.run(executor)` (its own main
    loop) and an optional `.close()`. Without `.run`, the node is spun by `executor_cls`
    (single-threaded).
    """
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    args = list(sys.argv if argv is None else [sys.argv[0], *argv])
    # A context of its own (the Interbotix module initialises the default one itself).
    context = node = executor = None
    try:
        context = open_context(args, signal_handlers=True)
        node = build(context=context)
        executor = (executor_cls or SingleThreadedExecutor)(context=context)
        executor.add_node(node)
        if hasattr(node, "run"):
            return int(node.run(executor) or 0)
        executor.spin()
        return 0
    except ConfigError as e:
        print(f"{name}: configuration error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        if node is not None:
            if hasattr(node, "close"):
                try:
                    node.close()
                except Exception as e:  # noqa: BLE001 - report, still shut down
                    print(f"{name}: error while closing: {e}", file=sys.stderr)
            node.destroy_node()
        if context is not None:
            context.try_shutdown()


def say(node, text: str) -> None:
    """Log `text`, also after Ctrl-C has shut the node's context down (then to stderr)."""
    if node.context.ok():
        node.get_logger().info(text)
    else:
        print(f"[{node.get_namespace().strip('/')}.{node.get_name()}] {text}", file=sys.stderr)
