"""The policy server: runs the current policy on every observation and publishes a_r(t).

- `observation`(t) -> `action_robot`(t), stamped with the observation's stamp. The policy's frame
  history is reset at every episode start event.
- A non-finite policy output is never published (the arbiter then holds for that tick) and is
  counted; an output outside [-1, 1] is clipped and counted.
- Hot swap: a checkpoint arriving as bytes on `policy/checkpoint` is unpacked, loaded and checked
  on a worker thread (never on the control path), announced on `policy/active` as "pending", and
  made active at the next episode start event; a checkpoint that fails any check is "refused" with
  the reason and the running policy stays. `policy/active` (JSON {id, state, reason}) is transient
  local, so the recorder and the trainer see the active id whenever they join.

Policies: `checkpoint` names a checkpoint directory (mile_ros.learning.checkpoint), or a directory with a
`latest` pointer; "" = the simulated
WidowX task's initial policy (BC on a few noisy expert demonstrations, built by mile_ros.benchmark,
deterministic per `initial_seed` and cached on disk).
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node

from mile_ros import interfaces as itf
from mile_ros.params import ConfigError, declare_node_parameters
from mile_ros.nodes._runtime import say

NODE = "policy_server"
INITIAL_TASK = "widowx"
CONTROL_DEPTH = 1000           # observation / action_robot queue depth (see the node)


def active_qos():
    """policy/active: reliable, transient local; the last message is always the running policy
    (see _reannounce_active), the ones before it say what happened to offered checkpoints."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def checkpoint_qos():
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


# --- policies -----------------------------------------------------------------------------------
class StackedRunner:
    """Frame-stacking runner for a policy with `.act(stacked_obs)` (current state first)."""

    def __init__(self, act, frame_stack: int):
        self.act, self.k, self.frames = act, int(frame_stack), None

    def reset(self) -> None:
        self.frames = None

    def step(self, state, image=None):
        state = np.asarray(state, dtype=np.float64)
        self.frames = [state] * self.k if self.frames is None else [state, *self.frames[:-1]]
        return self.act(np.concatenate(self.frames))


class ModelRunner:
    """A MileModel's PolicyRunner with the configured sampling mode."""

    def __init__(self, runner, deterministic: bool):
        self.runner, self.deterministic = runner, deterministic

    def reset(self) -> None:
        self.runner.reset()

    def step(self, state, image=None):
        return self.runner.step(state, image, deterministic=self.deterministic)


@dataclass
class LoadedPolicy:
    id: str
    state_names: list[str]
    action_names: list[str]
    make_runner: object            # () -> runner with reset() and step(state, image=None)
    uses_image: bool = False
    source: str = ""


def _checkpoint_id(path: Path) -> str:
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = {}
    for key in ("id", "checkpoint_id"):
        if manifest.get(key):
            return str(manifest[key])
    return path.name


def load_policy_dir(path: str | Path, deterministic: bool = True) -> LoadedPolicy:
    """A MILE checkpoint directory -> LoadedPolicy (CheckpointError, a ValueError, on problems)."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"no checkpoint directory at {path}")
    from mile_ros.learning.checkpoint import load_checkpoint

    model = load_checkpoint(path)

    def make_runner():
        return ModelRunner(model.runner(), deterministic)
    policy_id = getattr(model, "checkpoint_id", None) or _checkpoint_id(path)
    return LoadedPolicy(id=policy_id, state_names=list(model.obs_spec.state_names),
                        action_names=list(model.action_spec.names), make_runner=make_runner,
                        uses_image=model.obs_spec.image_shape is not None, source=str(path))


def initial_policy(seed: int, deterministic: bool = True) -> LoadedPolicy:
    """The simulated WidowX task's initial policy (mile_ros.benchmark, cached per seed)."""
    from mile_ros.benchmark.envs import make_task
    from mile_ros.sim.initial import InitialConfig, build_initial_policy

    cfg = InitialConfig()
    task = make_task(INITIAL_TASK, seed=seed, options=cfg.task)
    try:
        policy, _info = build_initial_policy(INITIAL_TASK, seed, cfg, task=task)
        state_names, action_names = list(task.state_names), list(task.action_names)
    finally:
        task.close()
    rng = np.random.default_rng(seed)

    def act(stacked):
        return policy.act(stacked, deterministic=deterministic, rng=rng)
    return LoadedPolicy(id=f"initial:{INITIAL_TASK}:seed{seed}", state_names=state_names,
                        action_names=action_names,
                        make_runner=lambda: StackedRunner(act, cfg.frame_stack),
                        source="mile_ros.benchmark initial policy")


def _id_in_archive(data: bytes) -> str:
    """Best effort: the id in a checkpoint archive's manifest, to name a refused checkpoint."""
    import io
    import tarfile

    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.endswith("/manifest.json"):
                    return str(json.loads(tar.extractfile(member).read())["id"])
    except Exception:  # noqa: BLE001 - unreadable: described by the refusal reason instead
        pass
    return f"<{len(data)} bytes>"


def check_compatible(new: LoadedPolicy, old: LoadedPolicy, observation_names=None) -> None:
    """Raise ValueError when `new` cannot replace `old` on this graph."""
    if new.action_names != old.action_names:
        raise ValueError(f"action names {new.action_names} differ from the running policy's "
                         f"{old.action_names}")
    names = observation_names or old.state_names
    missing = [n for n in new.state_names if n not in names]
    if missing:
        raise ValueError(f"needs observation dimensions {missing} that the arm does not publish "
                         f"(it publishes {list(names)})")
    runner = new.make_runner()  # one trial step: shapes, finiteness
    a = np.asarray(runner.step(np.zeros(len(new.state_names)),
                               np.zeros((8, 8, 3), np.uint8) if new.uses_image else None))
    if a.shape != (len(new.action_names),):
        raise ValueError(f"policy returns shape {a.shape}, expected ({len(new.action_names)},)")


@dataclass
class PolicyCounts:
    steps: int = 0
    nonfinite: int = 0
    clipped: int = 0
    obs_mismatch: int = 0
    no_image: int = 0
    errors: int = 0
    step_s: list = field(default_factory=list)

    def summary(self) -> str:
        t = np.asarray(self.step_s[-1000:]) * 1e3
        lat = f" inference p50={np.median(t):.2f} ms p99={np.percentile(t, 99):.2f} ms" if len(t) else ""
        return (f"steps={self.steps} nonfinite(not published)={self.nonfinite} "
                f"clipped={self.clipped} obs_mismatch={self.obs_mismatch} "
                f"no_image={self.no_image} errors={self.errors}{lat}")


# --- the node -----------------------------------------------------------------------------------
class PolicyServerNode(Node):
    def __init__(self, context, policy_loader=None):
        super().__init__(NODE, context=context,
                         automatically_declare_parameters_from_overrides=True)
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import String, UInt8MultiArray

        self.p = p = declare_node_parameters(self, NODE)
        self.deterministic = bool(p["deterministic"])
        self._String = String
        self.counts = PolicyCounts()
        loader = policy_loader or self._load_configured
        try:
            self.policy = loader()
        except ValueError as e:  # CheckpointError is a ValueError
            raise ConfigError(f"policy_server parameter 'checkpoint' ({p['checkpoint']!r}): {e}") from None
        self.runner = self.policy.make_runner()
        self.pending: LoadedPolicy | None = None
        self.observation_names: list[str] | None = None
        self._lock = threading.Lock()  # guards policy/pending/runner between the two groups
        self._receive_dir = Path(p["receive_dir"]) if p["receive_dir"] else Path(
            tempfile.mkdtemp(prefix="mile_ros_checkpoints_"))
        self._own_receive_dir = not p["receive_dir"]
        self._latest_image = None
        self._last_report = time.monotonic()

        control = MutuallyExclusiveCallbackGroup()
        loading = MutuallyExclusiveCallbackGroup()
        # Deep queues: in lockstep the arm runs ahead while the person drives, and a 2-core
        # machine can stall this process for a second; an observation dropped here is a tick
        # without a_r, i.e. lost from the recorded data.
        self.action_pub = self.create_publisher(JointState, itf.ACTION_ROBOT, CONTROL_DEPTH)
        self.active_pub = self.create_publisher(String, itf.POLICY_ACTIVE, active_qos())
        # Episode events before observations: with both ready, the executor takes them in order.
        self.create_subscription(String, itf.EPISODE, self._on_episode, 20,
                                 callback_group=control)
        self.create_subscription(JointState, itf.OBSERVATION, self._on_observation, CONTROL_DEPTH,
                                 callback_group=control)
        self.create_subscription(Image, itf.IMAGE, self._on_image, 2, callback_group=control)
        self.create_subscription(UInt8MultiArray, itf.CHECKPOINT, self._on_checkpoint,
                                 checkpoint_qos(), callback_group=loading)
        self._announce(self.policy.id, "active", f"loaded at start-up from {self.policy.source}")
        self.get_logger().info(f"policy_server: active policy {self.policy.id} "
                               f"(state {len(self.policy.state_names)}, actions "
                               f"{self.policy.action_names})")

    def _load_configured(self) -> LoadedPolicy:
        if self.p["checkpoint"]:
            return load_policy_dir(self.p["checkpoint"], self.deterministic)
        return initial_policy(self.p["initial_seed"], self.deterministic)

    def _announce(self, policy_id: str, state: str, reason: str) -> None:
        self.active_pub.publish(self._String(data=json.dumps(
            {"id": policy_id, "state": state, "reason": reason})))

    # --- control path ---------------------------------------------------------------------------
    def _on_episode(self, msg) -> None:
        try:
            event = itf.parse_episode_event(msg.data)
        except ValueError:
            return
        if event["event"] != "start":
            return
        with self._lock:
            if self.pending is not None:
                self.policy, self.pending = self.pending, None
                self.runner = self.policy.make_runner()
                self._announce(self.policy.id, "active",
                               f"swapped in at the start of episode {event['episode']}")
                self.get_logger().info(f"policy {self.policy.id} active from episode "
                                       f"{event['episode']}")
            self.runner.reset()

    def _on_image(self, msg) -> None:
        if self.policy.uses_image and msg.encoding == "rgb8":
            self._latest_image = np.frombuffer(bytes(msg.data), np.uint8).reshape(
                msg.height, msg.width, 3)

    def _on_observation(self, msg) -> None:
        c = self.counts
        if self.observation_names != list(msg.name):
            self.observation_names = list(msg.name)
        with self._lock:
            policy, runner = self.policy, self.runner
        try:
            state = itf.vector_from_msg(msg, policy.state_names)
        except ValueError as e:
            c.obs_mismatch += 1
            self.get_logger().error(f"observation does not fit policy {policy.id}: {e}",
                                    throttle_duration_sec=5.0)
            return
        image = None
        if policy.uses_image:
            image = self._latest_image
            if image is None:
                c.no_image += 1
                return
        t0 = time.perf_counter()
        try:
            a = np.asarray(runner.step(state, image), dtype=np.float64).reshape(-1)
        except Exception as e:  # noqa: BLE001 - a failing policy must not take the node down
            c.errors += 1
            self.get_logger().error(f"policy {policy.id} failed: {e}", throttle_duration_sec=5.0)
            return
        c.step_s.append(time.perf_counter() - t0)
        c.steps += 1
        if a.shape != (len(policy.action_names),) or not np.all(np.isfinite(a)):
            c.nonfinite += 1
            self.get_logger().warning(f"policy {policy.id} produced {a.tolist()}: not published "
                                      f"({c.nonfinite} so far)", throttle_duration_sec=2.0)
            return
        if np.any(np.abs(a) > 1.0):
            c.clipped += 1
            a = np.clip(a, -1.0, 1.0)
        self.action_pub.publish(itf.vector_msg(policy.action_names, a,
                                               itf.stamp_to_ns(msg.header.stamp)))
        if time.monotonic() - self._last_report > 30.0:
            self._last_report = time.monotonic()
            self.get_logger().info(f"policy_server: {c.summary()}")

    # --- hot swap (worker thread) ------------------------------------------------------------------
    def _on_checkpoint(self, msg) -> None:
        data = bytes(msg.data)
        t0 = time.monotonic()
        policy_id = _id_in_archive(data)
        try:
            from mile_ros.learning.checkpoint import checkpoint_from_bytes

            path = checkpoint_from_bytes(data, self._receive_dir)
            new = load_policy_dir(path, self.deterministic)
            policy_id = new.id
            with self._lock:
                current = self.pending or self.policy
            check_compatible(new, current, self.observation_names)
        except Exception as e:  # noqa: BLE001 - anything wrong with it means: refuse it
            reason = f"{type(e).__name__}: {e}"
            self._announce(policy_id, "refused", reason)
            self.get_logger().error(f"refused checkpoint {policy_id} ({len(data)} bytes): "
                                    f"{reason}; policy {self.policy.id} keeps running")
            self._reannounce_active()
            return
        with self._lock:
            self.pending = new
        self._announce(new.id, "pending", f"validated in {time.monotonic() - t0:.2f} s; "
                                          "active from the next episode start")
        self.get_logger().info(f"checkpoint {new.id} pending until the next episode start")
        self._reannounce_active()

    def _reannounce_active(self) -> None:
        """The last word is always the running policy, for late joiners that keep only one."""
        with self._lock:
            running, pending = self.policy.id, self.pending
        self._announce(running, "active", "running" + (f"; {pending.id} pending" if pending else ""))

    def close(self) -> None:
        say(self, f"policy_server: {self.counts.summary()}")
        if self._own_receive_dir:
            shutil.rmtree(self._receive_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    from functools import partial

    from rclpy.executors import MultiThreadedExecutor

    import torch

    from mile_ros.nodes._runtime import run_node

    torch.set_num_threads(1)  # small networks, one tick at a time: threads only add contention

    return run_node(NODE, PolicyServerNode, argv,
                    executor_cls=partial(MultiThreadedExecutor, num_threads=2))


if __name__ == "__main__":
    sys.exit(main())
