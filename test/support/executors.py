"""The control path's executors in in-process tests: the one a node would get, or a named one.

`make_executor(context)` builds what a node with `executor: auto` gets at start-up
($MILE_ROS_EXECUTOR over auto), so `MILE_ROS_EXECUTOR=single pytest ...` runs a test file under
the SingleThreadedExecutor; `UNDER_TEST` lists both, for tests parametrized over them.
"""
from __future__ import annotations

import pytest

from mile_ros.nodes._runtime import executor_choice, executor_factory
from mile_ros.params import ConfigError


def _events_available() -> bool:
    try:
        executor_factory("events")
    except ConfigError:
        return False
    return True


UNDER_TEST = [pytest.param("events", marks=pytest.mark.skipif(
                  not _events_available(), reason="this rclpy has no EventsExecutor")),
              "single"]


def make_executor(context, choice: str | None = None):
    """Build executor `choice`, else the one a node with `executor: auto` would get."""
    factory, _ = executor_factory(choice or executor_choice("auto")[0])
    return factory(context=context)
