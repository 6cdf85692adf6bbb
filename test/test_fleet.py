"""A fleet over real DDS: one trainer, several robots' policy servers (separate processes).

`train --robot-name A B C` delivers to every named robot and names each answer: one accepts, one
refuses (no key to check the signature with), one has no policy server; the exit status is the
refusal's. A refusal outranks a missing answer, a missing answer outranks acceptance.
"""
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import rclpy
import torch
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from mile_ros.learning.checkpoint import verify_checkpoint
from mile_ros.policy import delivery
from mile_ros.tools import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support.train_helpers import simulate_episode, write_external_bag  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PID = os.getpid()
OK, BAD, GONE = f"fleet_ok_{PID}", f"fleet_bad_{PID}", f"fleet_gone_{PID}"
LATCHED = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
FAST = ["--epochs-scale", "0.05", "--no-progress"]
torch.set_num_threads(1)


class Watcher:
    """Listens to policy/active of the given robots: [(arrival, answer)] per robot."""

    def __init__(self, robots):
        self.ctx = rclpy.Context()
        rclpy.init(args=[], context=self.ctx)
        self.node = Node("fleet_watcher", context=self.ctx)
        self.heard = {r: [] for r in robots}
        for r in robots:
            self.node.create_subscription(
                String, f"/{r}/policy/active",
                lambda m, r=r: self.heard[r].append((time.monotonic(), json.loads(m.data))),
                LATCHED)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        try:
            while self.ctx.ok():
                self.ex.spin_once(timeout_sec=0.05)
        except Exception:  # noqa: BLE001 - shutdown
            pass

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


def start_server(tmp: Path, robot: str, checkpoint: Path, key_file=None, allow_unsigned=False):
    env = dict(os.environ, PYTHONPATH=str(ROOT), RCUTILS_LOGGING_BUFFERED_STREAM="0")
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


def stop(proc) -> None:
    if proc.poll() is None:
        proc.send_signal(2)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def latest_of(root: Path) -> Path:
    return root / (root / "latest").read_text().strip()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fleet")
    write_external_bag(tmp / "run" / "iter1" / "ep0", simulate_episode(seed=5, max_ticks=40))
    assert train.main(["--bags", str(tmp / "run" / "iter1"), "--no-deliver", *FAST]) == 0
    key_file = tmp / "fleet.key"
    key_file.write_text(secrets.token_hex(32) + "\n")
    key_file.chmod(0o600)
    watcher = Watcher([OK, BAD, GONE])
    try:
        yield {"tmp": tmp, "bags": tmp / "run" / "iter1", "a_dir": latest_of(
            tmp / "run" / "checkpoints"), "key_file": key_file, "watcher": watcher}
    finally:
        watcher.close()


def test_the_exit_status_ranks_refused_over_no_answer_over_accepted():
    status = delivery.fleet_status
    assert status([0, 0]) == 0 and status([0]) == 0
    assert status([0, delivery.EXIT_NO_ANSWER]) == delivery.EXIT_NO_ANSWER == 4
    assert status([delivery.EXIT_NO_ANSWER, delivery.EXIT_REFUSED, 0]) == delivery.EXIT_REFUSED
    said = []
    answers = {"a": delivery.Answer("pending", "validated", 0.4),
               "b": delivery.Answer("active", "already running it", 0.3),
               "c": delivery.Answer("none", "no policy server answered on /c/policy/active")}
    assert delivery.report_answers(answers, "X", said.append) == 4
    assert said[0].startswith("a: policy server accepted X after 0.40 s")
    assert said[1].startswith("b: policy server accepted X") and "already runs it" in said[1]
    assert said[2].startswith("c: WARNING: no policy server answered on /c/policy/active")
    assert said[3] == "delivered X to 3 robots: a accepted, b accepted, c no answer " \
                      "(exit status 4)"


def test_train_delivers_to_every_named_robot_and_names_each_answer(fleet):
    tmp, watcher, a_dir = fleet["tmp"], fleet["watcher"], fleet["a_dir"]
    a_id = verify_checkpoint(a_dir)["id"]
    ok = start_server(tmp, OK, a_dir, key_file=fleet["key_file"])
    bad = start_server(tmp, BAD, a_dir)        # no key: a signed checkpoint is refused
    try:
        for robot in (OK, BAD):
            watcher.wait_for(robot, lambda a: a["state"] == "active" and a["id"] == a_id,
                             what="the configured checkpoint running")
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "mile_ros.cli", "train", "--bags",
                            str(fleet["bags"]), "--only", "--out", str(tmp / "multi"), "--init",
                            "none", "--robot-name", OK, BAD, GONE, "--wait-ack", "20",
                            "--key-file", str(fleet["key_file"]), *FAST],
                           cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                           capture_output=True, text=True, timeout=400)
        took = time.monotonic() - t0
        err = r.stderr
        assert r.returncode == delivery.EXIT_REFUSED, err[-4000:]
        new_id = verify_checkpoint(latest_of(tmp / "multi"))["id"]
        assert f"on /{OK}/policy/checkpoint, /{BAD}/policy/checkpoint, /{GONE}/policy/" \
               f"checkpoint; waiting up to 20 s for the 3 robots' policy servers" in err, err
        assert f"train: {OK}: policy server accepted {new_id} after " in err, err[-4000:]
        assert re.search(rf"train: {BAD}: policy server REFUSED {new_id} after [\d.]+ s: "
                         rf"SignatureError: bad signature: .*no checkpoint_key_file.*; it keeps "
                         rf"running {a_id}", err), err[-4000:]
        assert f"train: {GONE}: WARNING: no policy server answered on /{GONE}/policy/active " \
               f"within 20 s" in err, err[-4000:]
        assert f"delivered {new_id} to 3 robots: {OK} accepted, {BAD} REFUSED, {GONE} no " \
               f"answer (exit status 1)" in err, err[-4000:]
        seconds = {m.group(1): float(m.group(2)) for m in re.finditer(
            r"train: (\S+): policy server (?:accepted|REFUSED) \S+ after ([\d.]+) s", err)}
        print(f"\nmulti-robot delivery: answers after {seconds} s (from publishing); "
              f"train took {took:.1f} s in all (20 s of it waiting for {GONE})")
        assert watcher.heard[BAD][-1][1]["id"] == a_id
        # without a refusal, a missing answer decides: 4
        answers = delivery.deliver(latest_of(tmp / "multi"), new_id, [OK, GONE], 5.0,
                                   key=fleet["key_file"].read_text().strip().encode(),
                                   say=lambda m: None)
        assert answers[OK].accepted and answers[GONE].state == "none", answers
        assert delivery.report_answers(answers, new_id, lambda m: None) == 4
    finally:
        for proc in (ok, bad):
            stop(proc)
