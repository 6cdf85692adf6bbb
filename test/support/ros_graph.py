"""Helpers for the tests that start real policy servers: start and stop one, listen to answers.

`start_server` starts `mile_ros.nodes.policy_server` as its own process in a robot's namespace
(its log in a file: a pipe could block it); `start_store` starts a checkpoint_store process and
returns once it offers a checkpoint; `Watcher` listens, on a context of its own, to the
policy/active of the given robots and keeps every answer with its arrival time; `stop` presses
Ctrl-C and waits; `latest_of` reads a checkpoint root's `latest` pointer; `log_stamp` reads the
ROS log stamp of a line of a node's log.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def latched_qos():
    """Return the QoS of a reader that keeps every announcement (reliable, transient local)."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def spin_until_shutdown(executor, context, period_s: float = 0.05) -> threading.Thread:
    """Spin `executor` on a daemon thread until `context` shuts down; return the thread."""
    def spin():
        try:
            while context.ok():
                executor.spin_once(timeout_sec=period_s)
        except Exception:  # noqa: BLE001 - the context went down mid-spin
            pass
    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    return thread


class Watcher:
    """Listens to policy/active of the given robots: [(arrival, answer)] per robot."""

    def __init__(self, robots):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from std_msgs.msg import String

        self.ctx = rclpy.Context()
        rclpy.init(args=[], context=self.ctx)
        self.node = Node("fleet_watcher", context=self.ctx)
        self.heard = {r: [] for r in robots}
        for r in robots:
            self.node.create_subscription(
                String, f"/{r}/policy/active",
                lambda m, r=r: self.heard[r].append((time.monotonic(), json.loads(m.data))),
                latched_qos())
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self.thread = spin_until_shutdown(self.ex, self.ctx)

    def wait_for(self, robot, predicate, since=0.0, timeout=120.0, what="an answer"):
        """Return (arrival, answer) of the first answer since `since` that fits, or fail."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for when, a in list(self.heard[robot]):
                if when >= since and predicate(a):
                    return when, a
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what} on {robot}; "
                             f"heard: {[a for _, a in self.heard[robot][-6:]]}")

    def close(self):
        self.ctx.try_shutdown()
        self.thread.join(timeout=2)


def start_server(tmp: Path, robot: str, checkpoint: Path, key_file=None, allow_unsigned=False,
                 env: dict | None = None):
    """Start a policy server process for `robot`; its log is `<tmp>/<robot>.log`.

    It receives checkpoints into `<tmp>/received_<robot>`. `env`: the process's environment
    (default: this one's), PYTHONPATH and unbuffered ROS logging added.
    """
    env = dict(os.environ if env is None else env, PYTHONPATH=str(ROOT),
               RCUTILS_LOGGING_BUFFERED_STREAM="0")
    args = [sys.executable, "-m", "mile_ros.nodes.policy_server", "--ros-args", "-r",
            f"__ns:=/{robot}", "-p", f"checkpoint:={checkpoint}", "-p",
            f"receive_dir:={tmp / ('received_' + robot)}", "-p",
            f"allow_unsigned:={str(allow_unsigned).lower()}"]
    if key_file:
        args += ["-p", f"checkpoint_key_file:={key_file}"]
    log = tmp / f"{robot}.log"
    with open(log, "a") as out:   # a file, not a pipe: never blocks the process
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                text=True)
    proc.log = log
    return proc


def start_store(tmp: Path, name: str, robots, checkpoints: Path, key_file=None,
                env: dict | None = None, timeout: float = 120.0):
    """Start a checkpoint_store process; return it once it offers a checkpoint.

    Its log is `<tmp>/<name>.log`; `env` as for `start_server`.
    """
    env = dict(os.environ if env is None else env, PYTHONPATH=str(ROOT),
               RCUTILS_LOGGING_BUFFERED_STREAM="0")
    args = [sys.executable, "-m", "mile_ros.nodes.checkpoint_store", "--ros-args", "-r",
            f"__node:={name}", "-p", f"checkpoints:={checkpoints}", "-p",
            f"robot_names:=[{', '.join(robots)}]", "-p", "poll_period_s:=0.5"]
    if key_file:
        args += ["-p", f"key_file:={key_file}"]
    log = tmp / f"{name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                text=True)
    proc.log = log
    end = time.monotonic() + timeout
    while "offering" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > end:
            stop(proc)
            raise AssertionError(f"the store did not offer a checkpoint: {log.read_text()}")
        time.sleep(0.05)
    return proc


def log_stamp(log: Path, text: str, nth: int = 1) -> float:
    """Return the ROS log stamp (s) of the `nth` line of `log` that holds `text`."""
    lines = [line for line in log.read_text().splitlines() if text in line]
    assert len(lines) >= nth, (text, log.read_text()[-3000:])
    return float(re.search(r"\[(\d+\.\d+)\]", lines[nth - 1]).group(1))


def stop(proc) -> None:
    """Press Ctrl-C on `proc` and wait for it (killed after 30 s)."""
    if proc.poll() is None:
        proc.send_signal(2)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def latest_of(root: Path) -> Path:
    """Return the checkpoint directory that `<root>/latest` names."""
    return root / (root / "latest").read_text().strip()
