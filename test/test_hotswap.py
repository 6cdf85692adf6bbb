"""Hot swap between two processes over real DDS.

The policy server runs checkpoint A and holds a station key (`checkpoint_key_file`, unsigned
checkpoints not allowed: the shipped default); `train --key-file` (another process) delivers B as
signed bytes; B is pending until the next episode start and active from it (a_r follows A until
then, B after); corrupt, truncated and mismatched checkpoints are refused with a reason while the
running policy stays; so are unsigned ones, ones signed with another key, and ones altered after
signing, and the key appears in no log.
"""
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
import torch
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from mile_ros import interfaces as itf
from mile_ros.learning.checkpoint import checkpoint_to_bytes, load_checkpoint, verify_checkpoint
from mile_ros.policy import delivery, signing
from mile_ros.tools import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support.ros_graph import spin_until_shutdown  # noqa: E402
from support.train_helpers import simulate_episode, write_external_bag  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NS = f"hotswap_{os.getpid()}"
LATCHED = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
FAST = ["--epochs-scale", "0.05", "--no-progress"]
torch.set_num_threads(1)


class Peer:
    """Plays the arm (observations, episode events) and watches a_r and policy/active."""

    def __init__(self):
        self.ctx = rclpy.Context()
        rclpy.init(args=[], context=self.ctx)
        self.node = Node("peer", namespace=f"/{NS}", context=self.ctx)
        self.a_r, self.active = [], []
        self.node.create_subscription(JointState, itf.ACTION_ROBOT, lambda m: self.a_r.append(
            (itf.stamp_to_ns(m.header.stamp), np.array(m.position))), 50)
        # Keep every announcement: the server follows "pending"/"refused" at once with an "active"
        # re-announce, and a depth-1 reader that takes late (a loaded machine) keeps only the last.
        self.node.create_subscription(String, itf.POLICY_ACTIVE, lambda m: self.active.append(
            json.loads(m.data)), LATCHED)
        self.obs_pub = self.node.create_publisher(JointState, itf.OBSERVATION, 50)
        self.ep_pub = self.node.create_publisher(String, itf.EPISODE, LATCHED)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self.thread = spin_until_shutdown(self.ex, self.ctx)
        self.stamp = 1_000_000_000

    def wait(self, predicate, timeout=60.0, what="condition"):
        """Poll until predicate() holds; the timeouts are generous (CI runs on 2 loaded cores)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; "
                             f"policy/active (last 4): {self.active[-4:]}")

    def state(self):
        return self.active[-1] if self.active else {}

    def wait_running(self, checkpoint_id, what):
        """Wait until policy/active's last word says checkpoint_id is active.

        The last word on policy/active is always the running policy.
        """
        self.wait(lambda: self.state().get("id") == checkpoint_id
                  and self.state().get("state") == "active", 60.0, what)

    def tick(self, names, values):
        self.stamp += 50_000_000
        self.obs_pub.publish(itf.vector_msg(names, values, self.stamp))
        self.wait(lambda: self.a_r and self.a_r[-1][0] == self.stamp, 30.0, "a_r")
        return self.a_r[-1][1]

    def episode_start(self, index):
        """Publish a start event and wait until the server's reader has acknowledged it.

        So it is taken before the next observation (the server takes episode events first).
        """
        self.wait(lambda: self.ep_pub.get_subscription_count() > 0, 30.0,
                  "the server's episode subscription")
        self.ep_pub.publish(String(data=itf.episode_event("start", index, self.stamp + 1)))
        assert self.ep_pub.wait_for_all_acked(Duration(seconds=30)), "episode start not acked"

    def close(self):
        self.ctx.try_shutdown()
        self.thread.join(timeout=2)


def expected_actions(model, states):
    runner = model.runner()
    return np.array([runner.step(s) for s in states])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hotswap")
    ep = simulate_episode(seed=3, max_ticks=40)
    write_external_bag(tmp / "run" / "iter1" / "ep0", ep, namespace=NS)
    root = tmp / "run" / "checkpoints"
    assert train.main(["--bags", str(tmp / "run" / "iter1"), "--no-deliver", *FAST]) == 0
    a_dir = root / (root / "latest").read_text().strip()
    key = secrets.token_hex(32)
    key_file = tmp / "station.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    env = dict(os.environ, PYTHONPATH=str(ROOT), RCUTILS_LOGGING_BUFFERED_STREAM="0")
    log = tmp / "policy_server.log"
    with open(log, "w") as out:   # a file, not a pipe: read while it runs, never blocks it
        server = subprocess.Popen(
            [sys.executable, "-m", "mile_ros.nodes.policy_server", "--ros-args", "-r",
             f"__ns:=/{NS}", "-p", f"checkpoint:={a_dir}", "-p",
             f"receive_dir:={tmp / 'received'}", "-p", f"checkpoint_key_file:={key_file}"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    peer = Peer()
    try:
        yield {"tmp": tmp, "root": root, "a_dir": a_dir, "names": ep["state_names"],
               "states": ep["state"], "server": server, "peer": peer, "env": env,
               "key": key.encode(), "key_file": key_file, "log": log}
    finally:
        peer.close()
        server.send_signal(2)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_swap_at_the_next_episode_start_then_refusals(setup):
    peer, names, states = setup["peer"], setup["names"], setup["states"]
    model_a = load_checkpoint(setup["a_dir"])
    peer.wait_running(model_a.checkpoint_id, "checkpoint A active")
    peer.wait(lambda: peer.obs_pub.get_subscription_count() > 0, 30, "the server's subscription")

    peer.episode_start(0)
    want_a = expected_actions(model_a, states[:8])
    got = [peer.tick(names, s) for s in states[:4]]
    np.testing.assert_allclose(got, want_a[:4], atol=1e-5)

    # another process trains B on the same bags and delivers it over ROS, signed
    r = subprocess.run([sys.executable, "-m", "mile_ros.cli", "train", "--bags",
                        str(setup["tmp"] / "run" / "iter1"), "--robot-name", NS, "--wait-ack",
                        "60", "--seed", "1", "--key-file", str(setup["key_file"]), *FAST],
                       cwd=ROOT, env=setup["env"], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    b_dir = setup["root"] / (setup["root"] / "latest").read_text().strip()
    model_b = load_checkpoint(b_dir)
    assert f"policy server accepted {model_b.checkpoint_id}" in r.stderr
    assert "signed (hmac-sha256)" in r.stderr and "signature verified" in r.stderr
    assert setup["key"].decode() not in r.stderr + r.stdout
    peer.wait(lambda: any(a.get("id") == model_b.checkpoint_id and a.get("state") == "pending"
                          for a in peer.active), 60, "B announced as pending")
    peer.wait_running(model_a.checkpoint_id, "A re-announced as the running policy")
    assert not any(a.get("id") == model_b.checkpoint_id and a.get("state") == "active"
                   for a in peer.active)

    # not before the boundary: the rest of this episode still runs A, history intact
    got = [peer.tick(names, s) for s in states[4:8]]
    np.testing.assert_allclose(got, want_a[4:8], atol=1e-5)
    assert not np.allclose(expected_actions(model_b, states[:4]), want_a[:4], atol=1e-3)

    peer.episode_start(1)
    peer.wait_running(model_b.checkpoint_id, "B active")
    got = [peer.tick(names, s) for s in states[:4]]
    np.testing.assert_allclose(got, expected_actions(model_b, states[:4]), atol=1e-5)

    # refusals, signed by the key holder: corrupt weights, a truncated archive, another
    # robot's action names -- a right signature does not make a bad checkpoint good
    good = checkpoint_to_bytes(b_dir)
    corrupt = bytearray(good)
    corrupt[len(corrupt) // 2: len(corrupt) // 2 + 64] = bytes(64)
    key = setup["key"]
    sender = delivery.CheckpointSender(NS)
    try:
        for label, data, words in (("corrupt", bytes(corrupt), "hash mismatch"),
                                   ("truncated", good[: len(good) // 3], "archive")):
            answer = sender.send(data, model_b.checkpoint_id, 20.0, signing.sign(data, key))
            assert answer.state == "refused", (label, answer)
            assert words in answer.reason, (label, answer.reason)
        other_dir = other_robot_checkpoint(setup["tmp"])
        other = checkpoint_to_bytes(other_dir)
        answer = sender.send(other, load_checkpoint(other_dir).checkpoint_id, 20,
                             signing.sign(other, key))
        assert answer.state == "refused" and "action names" in answer.reason, answer
    finally:
        sender.close()
    peer.episode_start(2)
    peer.wait(lambda: sum(a.get("state") == "refused" for a in peer.active) >= 3, 60,
              "the three refusals on policy/active")
    peer.wait_running(model_b.checkpoint_id, "B still running after the refusals")
    first_b = next(i for i, a in enumerate(peer.active)
                   if a.get("id") == model_b.checkpoint_id and a.get("state") == "active")
    assert all(a.get("id") == model_b.checkpoint_id for a in peer.active[first_b:]
               if a.get("state") == "active"), peer.active[first_b:]
    got = [peer.tick(names, s) for s in states[:3]]
    np.testing.assert_allclose(got, expected_actions(model_b, states[:3]), atol=1e-5)


def running_checkpoint(setup) -> tuple[str, Path]:
    """Return (id, directory) of the policy the server runs now (A, or B after the test above)."""
    peer = setup["peer"]
    peer.wait(lambda: peer.state().get("state") == "active", 60, "the running policy")
    running = peer.state()["id"]
    for d in [setup["a_dir"], *setup["root"].iterdir(), *(setup["tmp"] / "received").glob("*")]:
        if (d / "manifest.json").is_file() and verify_checkpoint(d)["id"] == running:
            return running, d
    raise AssertionError(f"no checkpoint directory holds the running policy {running}")


def test_unsigned_wrongly_signed_or_altered_checkpoints_are_refused_and_the_policy_stays(setup):
    peer, names, states, key = setup["peer"], setup["names"], setup["states"], setup["key"]
    running, running_dir = running_checkpoint(setup)
    model_old = load_checkpoint(running_dir)
    assert train.main(["--bags", str(setup["tmp"] / "run" / "iter1"), "--only", "--init", "none",
                       "--out", str(setup["tmp"] / "c"), "--seed", "2", "--no-deliver",
                       *FAST]) == 0
    c_dir = setup["tmp"] / "c" / (setup["tmp"] / "c" / "latest").read_text().strip()
    model_c = load_checkpoint(c_dir)
    want_old = expected_actions(model_old, states[:3])
    want_c = expected_actions(model_c, states[:3])
    assert not np.allclose(want_old, want_c, atol=1e-3)     # a_r tells the two apart
    good = checkpoint_to_bytes(c_dir)
    altered = bytearray(good)
    altered[len(altered) // 2] ^= 0x01                      # one bit, after signing
    other_key = secrets.token_hex(32).encode()
    cases = (("unsigned", good, None, "unsigned checkpoint"),
             ("another key", good, signing.sign(good, other_key), "bad signature"),
             ("altered after signing", bytes(altered), signing.sign(good, key), "bad signature"),
             ("not a signature", good, "hmac-sha256:" + "zz" * 32, "bad signature"))
    n_refused = sum(a.get("state") == "refused" for a in peer.active)
    sender = delivery.CheckpointSender(NS)
    try:
        for label, data, signature, words in cases:
            answer = sender.send(data, model_c.checkpoint_id, 20.0, signature)
            assert answer.state == "refused", (label, answer)
            assert answer.reason.startswith(f"SignatureError: {words}"), (label, answer.reason)
            assert answer.active_id == running, (label, answer)
        peer.wait(lambda: sum(a.get("state") == "refused" for a in peer.active)
                  >= n_refused + len(cases), 60, "the refusals on policy/active")
        assert not any(a.get("id") == model_c.checkpoint_id and a.get("state") != "refused"
                       for a in peer.active), peer.active[-8:]
        # the next episode still runs the old policy: nothing was made pending
        peer.episode_start(10)
        peer.wait_running(running, "the old policy still running after the refusals")
        np.testing.assert_allclose([peer.tick(names, s) for s in states[:3]], want_old,
                                   atol=1e-5)
        # the same bytes, signed with the station's key: accepted, and swapped in
        answer = sender.send(good, model_c.checkpoint_id, 30.0, signing.sign(good, key))
        assert answer.state == "pending" and "signature verified" in answer.reason, answer
    finally:
        sender.close()
    peer.episode_start(11)
    peer.wait_running(model_c.checkpoint_id, "C active once signed with the station's key")
    np.testing.assert_allclose([peer.tick(names, s) for s in states[:3]], want_c, atol=1e-5)
    log = setup["log"].read_text()
    assert log.count("refused checkpoint") >= len(cases), log[-3000:]
    assert key.decode() not in log and other_key.decode() not in log


def other_robot_checkpoint(tmp: Path) -> Path:
    ep = simulate_episode(seed=4, max_ticks=20)
    ep["action_names"] = ["vx", "vy", "vz", "grip"]
    write_external_bag(tmp / "other" / "iter1" / "ep0", ep)
    assert train.main(["--bags", str(tmp / "other" / "iter1"), "--no-deliver", *FAST]) == 0
    root = tmp / "other" / "checkpoints"
    return root / (root / "latest").read_text().strip()


def _answer_to(msg, state: str, reason: str) -> dict:
    """Return the answer a policy server gives to this CHECKPOINT message."""
    offer = itf.offer_digest(bytes(msg.data), itf.checkpoint_signature(msg),
                             itf.checkpoint_nonce(msg))
    return {"id": "X", "state": state, "reason": reason, "offer": offer}


@pytest.mark.parametrize("earlier", ["other bytes", "the same bytes"])
def test_an_older_answer_about_the_same_id_is_not_taken_for_the_new_offers(earlier):
    """Take only the answer to this offer, not an older one about the same checkpoint id.

    policy/active's history can arrive after the sender settled (a loaded machine): a "pending"
    about the same id, to other bytes or to an earlier offer of these bytes (another nonce),
    must not answer this offer.
    """
    sender = delivery.CheckpointSender(f"{NS}_stale")
    try:
        sender._settled = True
        data = b"new bytes of checkpoint X"
        old = itf.checkpoint_msg(b"older bytes of X" if earlier == "other bytes" else data,
                                 None, itf.new_offer_nonce())

        def publish(msg):     # the server's history arrives late, then its answer to these bytes
            now = time.monotonic()
            sender.answers.append((now, _answer_to(old, "pending", "earlier")))
            sender.answers.append((now, _answer_to(msg, "refused", "hash mismatch")))
        sender.pub.publish = publish
        answer = sender.send(data, "X", 5.0)
        assert answer.state == "refused" and answer.reason == "hash mismatch", answer
    finally:
        sender.close()
