"""The policy server over real DDS.

a_r(t) for every observation(t) with its stamp, frame history reset at episode start, non-finite
outputs withheld and counted, and the hot-swap receiving side (pending -> active at the next
episode start; refused with a reason, old policy kept).
"""
import itertools
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
import torch
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import String, UInt8MultiArray

from mile_ros import interfaces as itf
from mile_ros import params
from mile_ros.arms import ACTION_NAMES
from mile_ros.interfaces import active_qos
from mile_ros.nodes._runtime import executor_factory
from mile_ros.nodes.policy_server import PolicyServerNode
from mile_ros.policy.serving import LoadedPolicy, StackedRunner, check_compatible

ROOT = Path(__file__).resolve().parents[1]
_ns = itertools.count()
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
torch.set_num_threads(1)


class CountingRunner:
    """a = [steps since reset / 10, state[0], state[1], 0]; NaN when state[0] < 0, 3.0 when > 5."""

    def __init__(self):
        self.n = 0

    def reset(self):
        self.n = 0

    def step(self, state, image=None):
        self.n += 1
        if state[0] < 0:
            return np.array([np.nan, 0, 0, 0])
        return np.array([self.n / 10, state[0], state[1], 3.0 if state[0] > 5 else 0.0])


def stub_policy(policy_id="stub:1", names=("a", "b")):
    return LoadedPolicy(id=policy_id, state_names=list(names), action_names=list(ACTION_NAMES),
                        make_runner=CountingRunner, source="test stub")


class Harness:
    """A PolicyServerNode (own context, the executor its `executor` default names) and a peer."""

    def __init__(self, tmp_path, loader=stub_policy):
        self.ns = f"/ps_test_{next(_ns)}"
        values = params.resolve("policy_server", [], {"receive_dir": str(tmp_path / "received"),
                                                      "allow_unsigned": True})  # as in sim
        pfile = params.ros_params_file({"policy_server": values}, tmp_path / "ps.yaml")
        self.ctx = rclpy.Context()
        rclpy.init(args=["ps", "--ros-args", "-r", f"__ns:={self.ns}",
                         "--params-file", str(pfile)],
                   context=self.ctx)
        self.server = PolicyServerNode(self.ctx, policy_loader=loader)
        self.ex = executor_factory(values["executor"])[0](context=self.ctx)
        self.ex.add_node(self.server)
        self.peer_ctx = rclpy.Context()
        rclpy.init(args=[], context=self.peer_ctx)
        self.peer = Node("peer", namespace=self.ns, context=self.peer_ctx)
        self.a_r, self.active = [], []
        self.peer.create_subscription(JointState, itf.ACTION_ROBOT, lambda m: self.a_r.append(
            (itf.stamp_to_ns(m.header.stamp), list(m.name), list(m.position))), 50)
        self.peer.create_subscription(String, itf.POLICY_ACTIVE, lambda m: self.active.append(
            json.loads(m.data)), active_qos())
        self.obs_pub = self.peer.create_publisher(JointState, itf.OBSERVATION, 50)
        self.ep_pub = self.peer.create_publisher(String, itf.EPISODE, LATCHED)
        self.ckpt_pub = self.peer.create_publisher(UInt8MultiArray, itf.CHECKPOINT, LATCHED)
        self.peer_ex = SingleThreadedExecutor(context=self.peer_ctx)
        self.peer_ex.add_node(self.peer)
        self.threads = [threading.Thread(target=self._spin, args=(e, c), daemon=True)
                        for e, c in ((self.ex, self.ctx), (self.peer_ex, self.peer_ctx))]
        for t in self.threads:
            t.start()
        self.stamp = 1_000_000_000
        self.wait(lambda: self.obs_pub.get_subscription_count() > 0 and self.active)

    def offer(self, data: bytes) -> tuple[dict, dict]:
        """Publish checkpoint bytes; return the next two policy/active messages (answer, state)."""
        n = len(self.active)
        self.ckpt_pub.publish(UInt8MultiArray(data=list(data)))
        self.wait(lambda: len(self.active) >= n + 2)
        return self.active[n], self.active[n + 1]

    @staticmethod
    def _spin(executor, context):
        try:
            while context.ok():
                executor.spin_once(timeout_sec=0.05)
        except ExternalShutdownException:
            pass

    def wait(self, predicate, timeout=15.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(0.01)
        raise AssertionError("timed out waiting")

    def observe(self, values, names=("a", "b")):
        self.stamp += 50_000_000
        n = len(self.a_r)
        self.obs_pub.publish(itf.vector_msg(list(names), values, self.stamp))
        return self.stamp, n

    def tick(self, values, names=("a", "b"), timeout=10.0):
        """Publish one observation; return the a_r answering it (None: none within `timeout`).

        An answer that is expected may take seconds on a loaded machine (a full-suite run once
        took over 2 s); where none is expected a shorter wait says enough.
        """
        stamp, n = self.observe(values, names)
        try:
            self.wait(lambda: len(self.a_r) > n, timeout=timeout)
        except AssertionError:
            return None
        got = self.a_r[n]
        assert got[0] == stamp and got[1] == list(ACTION_NAMES)
        return np.array(got[2])

    def start_episode(self, index):
        n = len(self.active)
        self.ep_pub.publish(String(data=itf.episode_event("start", index, self.stamp + 1)))
        time.sleep(0.2)
        return n

    def close(self):
        self.server.close()
        for ctx in (self.ctx, self.peer_ctx):
            ctx.try_shutdown()
        for t in self.threads:
            t.join(timeout=2)


@pytest.fixture
def harness(tmp_path):
    h = Harness(tmp_path)
    yield h
    h.close()


def test_stamped_actions_history_reset_and_guards(harness):
    h = harness
    assert h.active[-1] == {"id": "stub:1", "state": "active",
                            "reason": "loaded at start-up from test stub"}
    np.testing.assert_allclose(h.tick([0.5, 0.25]), [0.1, 0.5, 0.25, 0.0])
    np.testing.assert_allclose(h.tick([0.5, 0.25]), [0.2, 0.5, 0.25, 0.0])
    h.start_episode(1)                         # frame history starts again
    np.testing.assert_allclose(h.tick([0.5, 0.25]), [0.1, 0.5, 0.25, 0.0])
    assert h.tick([-1.0, 0.0], timeout=2.0) is None      # NaN: not published
    np.testing.assert_allclose(h.tick([9.0, 0.0]), [0.3, 1.0, 0.0, 1.0])   # clipped to [-1, 1]
    assert h.tick([0.1], names=("a",), timeout=2.0) is None  # observation lacks "b"
    c = h.server.counts
    assert (c.nonfinite, c.clipped, c.obs_mismatch, c.steps) == (1, 1, 1, 5)


def test_check_compatible():
    old = stub_policy()
    check_compatible(stub_policy("stub:2", names=("c", "b")), old, ["a", "b", "c"])
    with pytest.raises(ValueError, match="action names"):
        check_compatible(LoadedPolicy("x", ["a"], ["dx"], CountingRunner), old)
    with pytest.raises(ValueError, match=r"\['z'\]"):
        check_compatible(stub_policy("x", names=("a", "z")), old, ["a", "b"])


def test_stacked_runner_puts_the_current_state_first():
    seen = []
    r = StackedRunner(lambda s: seen.append(s.copy()) or s[:1], frame_stack=3)
    r.step([1.0]), r.step([2.0]), r.step([3.0]), r.step([4.0])
    r.reset()
    r.step([9.0])
    assert [list(s) for s in seen] == [[1, 1, 1], [2, 1, 1], [3, 2, 1], [4, 3, 2], [9, 9, 9]]


def test_missing_checkpoint_is_a_clear_startup_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mile_ros.nodes.policy_server", "--ros-args",
                           "-r", f"__ns:=/ps_cfg_{next(_ns)}", "-p",
                           f"checkpoint:={tmp_path / 'nope'}"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert "'checkpoint'" in proc.stderr and "nope" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- hot swap with real checkpoints -------------------------------------------------------------
def tiny_model(state_names, action_names, seed):
    from mile_ros.learning import ActionSpec, MileConfig, ObsSpec, train_bc

    rng = np.random.default_rng(seed)
    episodes = [{"state": rng.normal(size=(30, len(state_names))),
                 "a_r": np.tanh(rng.normal(size=(30, len(action_names)))),
                 "a_h": np.full((30, len(action_names)), np.nan), "nu": np.zeros(30, bool)}]
    cfg = MileConfig(hidden=(16,), min_updates=20, max_updates=20, pretrain_updates=0, seed=seed)
    return train_bc(episodes, ObsSpec(list(state_names), frame_stack=2),
                    ActionSpec(list(action_names), "continuous"), cfg, progress=False)


def test_hot_swap_at_the_next_episode_start_and_refusals(tmp_path):
    checkpoint = pytest.importorskip("mile_ros.learning.checkpoint")
    good = tiny_model(["a", "b"], ACTION_NAMES, seed=1)
    good_id = checkpoint.save_checkpoint(good, tmp_path / "good")
    wrong = tiny_model(["a", "b"], ["x", "y"], seed=2)
    checkpoint.save_checkpoint(wrong, tmp_path / "wrong")
    good_bytes = checkpoint.checkpoint_to_bytes(tmp_path / "good")

    h = Harness(tmp_path)
    try:
        def offer(data):
            answer, latched = h.offer(data)
            assert latched["state"] == "active" and latched["id"] == "stub:1"   # still running
            return answer

        # corrupt bytes, a truncated checkpoint, mismatched actions: refused, stub keeps running
        wrong_id = checkpoint.verify_checkpoint(tmp_path / "wrong")["id"]
        for data, refused_id in ((b"not a checkpoint at all", "<23 bytes>"),
                                 (good_bytes[: len(good_bytes) // 2], None),
                                 (checkpoint.checkpoint_to_bytes(tmp_path / "wrong"), wrong_id)):
            answer = offer(data)
            assert answer["state"] == "refused" and answer["reason"], answer
            assert refused_id is None or answer["id"] == refused_id, answer
            np.testing.assert_allclose(h.tick([0.5, 0.25])[1:3], [0.5, 0.25])   # still the stub

        answer = offer(good_bytes)
        assert answer == {"id": good_id, "state": "pending", "reason": answer["reason"],
                          "offer": itf.offer_digest(good_bytes)}
        assert "unsigned, accepted: allow_unsigned is true" in answer["reason"], answer
        late = []   # a late joiner keeping one message (like the recorder) learns the running id
        h.peer.create_subscription(String, itf.POLICY_ACTIVE,
                                   lambda m: late.append(json.loads(m.data)), LATCHED)
        h.wait(lambda: late)
        assert late[0]["id"] == "stub:1" and late[0]["state"] == "active"
        np.testing.assert_allclose(h.tick([0.5, 0.25])[1:3], [0.5, 0.25])   # not before the start
        n = h.start_episode(5)
        h.wait(lambda: len(h.active) > n)
        assert h.active[-1]["id"] == good_id and h.active[-1]["state"] == "active"
        expected = good.runner().step(np.array([0.5, 0.25]))
        np.testing.assert_allclose(h.tick([0.5, 0.25]), expected, atol=1e-6)
    finally:
        h.close()


def test_a_slow_checkpoint_validation_does_not_stall_the_control_path(tmp_path):
    """While an offer is being validated (here: 3 s), observations are still answered at once.

    The server spins one executor thread; the offer waits on its checkpoint worker thread.
    """
    h = Harness(tmp_path)
    validating, release = threading.Event(), threading.Event()

    def slow_validate(data, signature):
        validating.set()
        release.wait(3.0)
        raise ValueError("too slow on purpose")

    h.server._validate = slow_validate
    try:
        n = len(h.active)
        h.ckpt_pub.publish(UInt8MultiArray(data=list(b"offer")))
        assert validating.wait(10.0)
        answered = [h.tick([0.5, 0.25], timeout=2.5) for _ in range(3)]
        still_validating = len(h.active) == n
        release.set()
        h.wait(lambda: len(h.active) >= n + 2)
        assert still_validating and all(a is not None for a in answered), answered
        assert h.active[n]["state"] == "refused" and "too slow on purpose" in h.active[n]["reason"]
    finally:
        release.set()
        h.close()


def test_before_its_first_observation_it_runs_a_checkpoint_at_once_and_never_goes_back(tmp_path):
    """A server that just started runs the offered checkpoint from its first episode.

    The one it runs, offered again, is answered "active" (nothing changes); an older one is
    refused: a restarted server taking a publisher's history never goes back.
    """
    checkpoint = pytest.importorskip("mile_ros.learning.checkpoint")
    older = tiny_model(["a", "b"], ACTION_NAMES, seed=1)
    checkpoint.save_checkpoint(older, tmp_path / "older")
    newer = tiny_model(["a", "b"], ACTION_NAMES, seed=2)
    newer_id = checkpoint.save_checkpoint(newer, tmp_path / "newer")
    h = Harness(tmp_path)
    try:
        newer_bytes = checkpoint.checkpoint_to_bytes(tmp_path / "newer")
        answer, running = h.offer(newer_bytes)
        assert answer["state"] == "pending" and answer["id"] == newer_id, answer
        assert "active at once: this server has taken no observation yet" in answer["reason"]
        assert running["state"] == "active" and running["id"] == newer_id, running
        expected = newer.runner().step(np.array([0.5, 0.25]))
        np.testing.assert_allclose(h.tick([0.5, 0.25]), expected, atol=1e-6)

        answer, running = h.offer(newer_bytes)          # again (a store's history, a restart)
        assert answer == {"id": newer_id, "state": "active", "reason": answer["reason"],
                          "offer": itf.offer_digest(newer_bytes)}, answer
        assert "already running it" in answer["reason"] and running["id"] == newer_id

        answer, running = h.offer(checkpoint.checkpoint_to_bytes(tmp_path / "older"))
        assert answer["state"] == "refused", answer
        assert f"older than {newer_id}, which it already has" in answer["reason"], answer
        assert running["state"] == "active" and running["id"] == newer_id
        assert h.tick([0.5, 0.25]) is not None
    finally:
        h.close()
