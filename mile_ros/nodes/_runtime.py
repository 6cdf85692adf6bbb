"""The one start-up and shutdown path of every node (and of the trainer's checkpoint sender).

`run_node(name, build, argv)` initialises a context of the node's own with its `--ros-args`,
builds the node (`build(context=...)`), spins it until Ctrl-C / SIGTERM / the node asks to stop,
and turns configuration problems into one line on stderr, `<node>: configuration error: ...`,
with exit status 2, instead of a traceback. On SIGINT or SIGTERM it stops spinning first, then
closes the node (its context still valid, so its last log lines and messages go out), and only
then shuts the context down.

The executor: `executor_cls` when the caller gives one, else the node's own `executor` parameter
when it has one (the control path: arbiter and arm; `executor_factory`), else rclpy's
SingleThreadedExecutor. The choice is logged at start-up.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Callable, NoReturn

from mile_ros.params import EXECUTORS, ConfigError

EXIT_CONFIG = 2
# Overrides every node's `executor` parameter when set (auto | events | single): the tests run
# the control path under each executor with it.
EXECUTOR_ENV = "MILE_ROS_EXECUTOR"


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


def open_context(args: list[str]):
    """Open a new rclpy context initialised with `args` (its `--ros-args`).

    rclpy installs no signal handlers for it: SIGINT/SIGTERM are the caller's (`run_node`'s).
    """
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    context = rclpy.Context()
    init_rclpy(args, context=context, signal_handler_options=SignalHandlerOptions.NO)
    return context


def executor_choice(param: str) -> tuple[str, str | None]:
    """Return (choice, override): $MILE_ROS_EXECUTOR's value when it is set, else `param`."""
    override = os.environ.get(EXECUTOR_ENV, "").strip() or None
    if override is not None and override not in EXECUTORS:
        raise ConfigError(f"${EXECUTOR_ENV} must be one of {', '.join(EXECUTORS)}, "
                          f"got {override!r}")
    return (override or param), override


def executor_factory(choice: str) -> tuple[Callable, str]:
    """Return (executor class or factory taking `context=`, its name for the log).

    `choice` is an `executor` parameter's value: auto = rclpy's EventsExecutor
    (rclpy.experimental, Jazzy and later) where it can be imported, else the
    SingleThreadedExecutor (Humble); events = the EventsExecutor, a ConfigError where this rclpy
    has none; single = the SingleThreadedExecutor.
    """
    from rclpy.executors import SingleThreadedExecutor

    if choice not in EXECUTORS:
        raise ConfigError(f"parameter 'executor' must be one of {', '.join(EXECUTORS)}, "
                          f"got {choice!r}")
    if choice == "single":
        return SingleThreadedExecutor, "SingleThreadedExecutor"
    try:
        from rclpy.experimental import EventsExecutor
    except ImportError as e:
        if choice == "events":
            raise ConfigError(f"parameter 'executor' is 'events', but this rclpy has no "
                              f"EventsExecutor ({e}; it needs ROS 2 Jazzy or later): use "
                              f"'auto' or 'single'") from None
        return SingleThreadedExecutor, ("SingleThreadedExecutor (rclpy.experimental."
                                        "EventsExecutor not available)")
    return EventsExecutor, "EventsExecutor (rclpy.experimental)"


def _node_executor(name: str, node) -> Callable:
    """Return the executor the node asks for with its `executor` parameter (logged), or single."""
    from rclpy.executors import SingleThreadedExecutor

    if not node.has_parameter("executor"):
        return SingleThreadedExecutor
    choice, override = executor_choice(node.get_parameter("executor").value)
    factory, text = executor_factory(choice)
    say(node, f"{name}: executor {text}"
        + (f" (${EXECUTOR_ENV}={override})" if override else ""))
    return factory


class _Stopper:
    """SIGINT/SIGTERM while a node runs: stop spinning first, shut the context down after.

    rclpy's own handlers would shut the context down at once, while a spin thread still waits
    on it or `close()` still logs through it. Before the node runs (building it, `setup()`), a
    signal aborts the start-up as a KeyboardInterrupt.
    """

    def __init__(self):
        self.event = threading.Event()
        self.node = None
        self.running = False
        self._previous = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __call__(self, signum, frame) -> None:
        self.event.set()
        if hasattr(self.node, "request_stop"):
            self.node.request_stop()
        if not self.running:
            raise KeyboardInterrupt


def _spin(node, executor, stopper: _Stopper) -> int:
    """Run the node: its own `run(executor)` loop, or spin until a signal stops it."""
    if hasattr(node, "setup"):
        node.setup(executor)
    stopper.running = True
    if hasattr(node, "run"):
        return int(node.run(executor) or 0)
    while not stopper.event.is_set():
        executor.spin_once(timeout_sec=0.1)
    return 0


ACK_WAIT_S = 1.0   # at shut-down, how long a node waits for its reliable messages to be acked


def _drain(node, timeout_s: float = ACK_WAIT_S) -> None:
    """Wait until every reliable subscriber has acknowledged what the node published (bounded).

    The process ends right after the shut-down (`end_process`): messages still on their way,
    such as the arm's last observations and its episode end event, would be lost with it.
    """
    from rclpy.duration import Duration

    deadline = time.monotonic() + timeout_s
    for publisher in list(node.publishers):
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            publisher.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9)))
        except Exception:  # noqa: BLE001 - a publisher already destroyed: nothing to wait for
            pass


def _close(name: str, node, executor, context) -> None:
    """Close the node while its context is still valid, then take everything down."""
    if node is not None and hasattr(node, "close"):
        try:
            node.close()
        except Exception as e:  # noqa: BLE001 - report, still shut down
            print(f"{name}: error while closing: {e}", file=sys.stderr)
    if node is not None and context is not None and context.ok():
        _drain(node)
    if executor is not None:
        executor.shutdown(timeout_sec=2.0)
    if node is not None:
        node.destroy_node()
    if context is not None:
        context.try_shutdown()


def end_process(code: int) -> NoReturn:
    """Exit now with `code`, skipping the interpreter's teardown.

    With torch and a DDS participant loaded, the teardown after a node has already closed
    everything takes seconds on a loaded machine -- past `ros2 launch`'s 5 s SIGTERM escalation.
    Python's and C's output buffers and the logging handlers are flushed first.
    """
    import ctypes
    import logging
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    logging.shutdown()
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass
    os._exit(code)


def run_node(name: str, build: Callable, argv: list[str] | None = None, executor_cls=None,
             exit_process: bool = True) -> int:
    """Build the node and run it; return the exit status.

    `build(context=context)` returns a node with an optional `.setup(executor)` (start-up work
    that needs the executor), an optional `.run(executor)` (its own main loop, which returns
    once `.request_stop()` was called) and an optional `.close()`. Without `.run`, the node is
    spun by the executor until SIGINT or SIGTERM: `executor_cls`, else the one its `executor`
    parameter names, else single-threaded. With `exit_process` (a
    node's `main`), the process then ends at once with the status (`end_process`).
    """
    code = _run(name, build, argv, executor_cls)
    if exit_process:
        end_process(code)
    return code


def _run(name: str, build: Callable, argv: list[str] | None, executor_cls) -> int:
    from rclpy.executors import ExternalShutdownException

    args = list(sys.argv if argv is None else [sys.argv[0], *argv])
    stopper = _Stopper()
    stopper.install()
    # A context of its own (the Interbotix module initialises the default one itself).
    context = node = executor = None
    try:
        context = open_context(args)
        node = stopper.node = build(context=context)
        executor = (executor_cls or _node_executor(name, node))(context=context)
        executor.add_node(node)
        return _spin(node, executor, stopper)
    except ConfigError as e:
        print(f"{name}: configuration error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    finally:
        stopper.running = True          # a second Ctrl-C no longer interrupts the clean-up
        _close(name, node, executor, context)
        stopper.restore()


def say(node, text: str) -> None:
    """Log `text`, also after Ctrl-C has shut the node's context down (then to stderr)."""
    if node.context.ok():
        node.get_logger().info(text)
    else:
        print(f"[{node.get_namespace().strip('/')}.{node.get_name()}] {text}", file=sys.stderr)
