"""The policy server: runs the current policy on every observation and publishes a_r(t).

- `observation`(t) -> `action_robot`(t), stamped with the observation's stamp. The policy's frame
  history is reset at every episode start event. An image policy takes the newest camera frame
  (resized to its own size); with `image_sync` it waits for the frame stamped t (the simulated
  camera renders each tick's state; lockstep would otherwise act on an older frame). Observations
  wait in order, each acted on when the frame stamped t or later arrives: in lockstep the arm runs
  ahead while the person drives, and a_r of those ticks (MILE's data) is late but not lost. Beyond
  WAITING_MAX waiting observations the oldest is dropped (counted as no_image).
- A non-finite policy output is never published (the arbiter then holds for that tick) and is
  counted; an output outside [-1, 1] is clipped and counted.
- Hot swap: a checkpoint arriving as bytes on `policy/checkpoint` is unpacked, loaded and checked
  on the node's checkpoint worker thread (never on the control path), announced on
  `policy/active` as "pending", and made active at the next episode start event -- or at once
  while the server has not yet taken an observation (it just started: it runs the checkpoint
  from its first episode); a checkpoint that fails any check is "refused" with the reason and
  the running policy stays.
  `policy/active` (JSON {id, state, reason}, and for pending/refused `offer`, a digest of the
  bytes and signature answered) is transient local, so the recorder and the trainer see the
  active id whenever they join.
- Late start: `policy/checkpoint` is transient local, so a server that starts (or restarts) takes
  the newest checkpoint from the history of every publisher (a `train` that still waits, the
  trainer machine's `checkpoint_store` always) and validates it as any delivery. It never goes
  back: a checkpoint saved before one it runs or holds pending is refused ("older than ..."); the
  one it already runs is answered "active" with the offer (nothing changes).
- Who may replace the policy: a delivered checkpoint must carry an HMAC-SHA256 signature of its
  bytes made with the key in `checkpoint_key_file` (mile_ros.policy.signing), checked before it is
  unpacked; an unsigned one is refused unless `allow_unsigned` is true (as `mile-ros collect
  --sim`, the sim launch and the demo set it), a wrongly signed one always. A key file that is
  missing, unreadable or empty is a configuration error (exit 2); the key is never logged.

Executor: the `executor` parameter, as the arm's (auto = rclpy's EventsExecutor where there is
one). The control path (observations, images, episode events) is this one executor thread; a
checkpoint is only queued there. rclpy's MultiThreadedExecutor, which this node spun before, cost
the lockstep simulation 70-75% of its tick rate on 2 cores (bench/bench_collect.py, README).

Policies: `checkpoint` names a checkpoint directory (mile_ros.learning.checkpoint), or a
directory with a `latest` pointer; "" = the simulated WidowX task's initial policy (BC on a few
noisy expert demonstrations, built by mile_ros.benchmark, deterministic per `initial_seed` and
cached on disk).
"""
from __future__ import annotations

import queue
import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rclpy.node import Node

from mile_ros import interfaces as itf
from mile_ros.nodes._runtime import say
from mile_ros.params import ConfigError, declare_node_parameters
from mile_ros.policy.signing import loose_permissions, read_key, verify_signature

if TYPE_CHECKING:
    from mile_ros.policy.serving import LoadedPolicy

# mile_ros.policy.serving (and torch, ~1 s of a start) is imported in the node's constructor,
# after its DDS participant exists: discovery -- of the checkpoint store, say, whose offer a
# (re)starting server takes -- runs on DDS's own threads meanwhile (README "Fleet").
NODE = "policy_server"
WAITING_MAX = 200   # image_sync: observations waiting for their frames (10 s at 20 Hz)


# --- the node -----------------------------------------------------------------------------------
class PolicyServerNode(Node):
    def __init__(self, context, policy_loader=None, torch_threads: int | None = None):
        """Build the node; `torch_threads`: torch.set_num_threads before the policy is loaded."""
        super().__init__(NODE, context=context,
                         automatically_declare_parameters_from_overrides=True)
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import String, UInt8MultiArray

        self.p = p = declare_node_parameters(self, NODE)
        self.deterministic = bool(p["deterministic"])
        self.allow_unsigned = bool(p["allow_unsigned"])
        self._key = self._read_key()
        self._String = String
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
        from mile_ros.policy.serving import PolicyCounts

        self.counts = PolicyCounts()
        loader = policy_loader or self._load_configured
        try:
            self.policy = loader()
        except ValueError as e:  # CheckpointError is a ValueError
            raise ConfigError(f"policy_server parameter 'checkpoint' ({p['checkpoint']!r}): "
                              f"{e}") from None
        self.runner = self.policy.make_runner()
        self.pending: LoadedPolicy | None = None
        self.observation_names: list[str] | None = None
        self._serving = False          # an observation was taken: swaps wait for an episode start
        self._lock = threading.Lock()  # guards policy/pending/runner: executor and worker
        self._receive_dir = Path(p["receive_dir"]) if p["receive_dir"] else Path(
            tempfile.mkdtemp(prefix="mile_ros_checkpoints_"))
        self._own_receive_dir = not p["receive_dir"]
        self._latest_image = None      # (stamp ns, frame) of the newest camera frame
        self._waiting = deque()        # image_sync: observations waiting for their frames
        self._last_report = time.monotonic()

        # Deep queues: in lockstep the arm runs ahead while the person drives, and a 2-core
        # machine can stall this process for a second; an observation dropped here is a tick
        # without a_r, i.e. lost from the recorded data.
        self.action_pub = self.create_publisher(JointState, itf.ACTION_ROBOT, itf.control_qos())
        self.active_pub = self.create_publisher(String, itf.POLICY_ACTIVE, itf.active_qos())
        # Episode events before observations: with both ready, the executor takes them in order.
        self.create_subscription(String, itf.EPISODE, self._on_episode, 20)
        self.create_subscription(JointState, itf.OBSERVATION, self._on_observation,
                                 itf.control_qos())
        self.create_subscription(Image, itf.IMAGE, self._on_image, 2)
        self._offers: queue.Queue = queue.Queue()      # (bytes, signature); None = stop
        self._worker = threading.Thread(target=self._checkpoint_worker, daemon=True,
                                        name="policy_server checkpoints")
        self._worker.start()
        self.create_subscription(UInt8MultiArray, itf.CHECKPOINT, self._queue_checkpoint,
                                 itf.checkpoint_qos())
        self._announce(self.policy.id, itf.ACTIVE, f"loaded at start-up from {self.policy.source}")
        self.get_logger().info(f"policy_server: active policy {self.policy.id} "
                               f"(state {len(self.policy.state_names)}, actions "
                               f"{self.policy.action_names})")

    def _read_key(self) -> bytes | None:
        """Return the checkpoint key (None: no key file named); say what will be accepted."""
        path, log = self.p["checkpoint_key_file"], self.get_logger()
        if not path:
            if self.allow_unsigned:
                log.info("policy_server: accepts unsigned checkpoints (allow_unsigned is true)")
            else:
                log.warning("policy_server: no checkpoint_key_file and allow_unsigned is false: "
                            "every checkpoint sent over ROS will be refused")
            return None
        key = read_key(path, "policy_server parameter 'checkpoint_key_file'")
        warning = loose_permissions(path)
        if warning:
            log.warning(f"policy_server: {warning}")
        log.info(f"policy_server: accepts checkpoints signed with the key in {path}"
                 + (" (and unsigned ones: allow_unsigned is true)" if self.allow_unsigned else ""))
        return key

    def _load_configured(self) -> LoadedPolicy:
        from mile_ros.policy.serving import initial_policy, load_policy_dir

        if self.p["checkpoint"]:
            return load_policy_dir(self.p["checkpoint"], self.deterministic)
        return initial_policy(self.p["initial_seed"], self.deterministic)

    def _announce(self, policy_id: str, state: str, reason: str, offer: str | None = None) -> None:
        self.active_pub.publish(self._String(
            data=itf.policy_answer(policy_id, state, reason, offer)))

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
                self._announce(self.policy.id, itf.ACTIVE,
                               f"swapped in at the start of episode {event['episode']}")
                self.get_logger().info(f"policy {self.policy.id} active from episode "
                                       f"{event['episode']}")
            self.runner.reset()

    def _on_image(self, msg) -> None:
        if self.policy.uses_image and msg.encoding == "rgb8":
            stamp = itf.stamp_to_ns(msg.header.stamp)
            self._latest_image = (stamp, np.frombuffer(bytes(msg.data), np.uint8).reshape(
                msg.height, msg.width, 3))
            while self._waiting and itf.stamp_to_ns(self._waiting[0].header.stamp) <= stamp:
                self._act(self._waiting.popleft())

    def _on_observation(self, msg) -> None:
        if self.p["image_sync"] and self.policy.uses_image:
            frame = self._latest_image
            if frame is None or frame[0] < itf.stamp_to_ns(msg.header.stamp) or self._waiting:
                self._waiting.append(msg)
                if len(self._waiting) > WAITING_MAX:
                    self._waiting.popleft()
                    self.counts.no_image += 1
                return
        self._act(msg)

    def _act(self, msg) -> None:
        c = self.counts
        if self.observation_names != list(msg.name):
            self.observation_names = list(msg.name)
        with self._lock:
            policy, runner = self.policy, self.runner
            self._serving = True
        try:
            state = itf.vector_from_msg(msg, policy.state_names)
        except ValueError as e:
            c.obs_mismatch += 1
            self.get_logger().error(f"observation does not fit policy {policy.id}: {e}",
                                    throttle_duration_sec=5.0)
            return
        image = None
        if policy.uses_image:
            if self._latest_image is None:
                c.no_image += 1
                return
            image = self._latest_image[1]
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

    # --- hot swap (worker thread) ---------------------------------------------------------------
    def _queue_checkpoint(self, msg) -> None:
        """Executor thread: hand the offer to the worker (validating it takes up to seconds)."""
        self._offers.put((bytes(msg.data), itf.checkpoint_signature(msg),
                          itf.checkpoint_nonce(msg)))

    def _checkpoint_worker(self) -> None:
        """Answer each offer in arrival order until close() queues None."""
        while (offer := self._offers.get()) is not None:
            try:
                self._on_checkpoint(*offer)
            except Exception as e:  # noqa: BLE001 - the worker must outlive one bad answer
                print(f"policy_server: checkpoint worker: {type(e).__name__}: {e}",
                      file=sys.stderr)

    def _on_checkpoint(self, data: bytes, signature: str | None, nonce: str | None) -> None:
        from mile_ros.policy.serving import _id_in_archive

        t0 = time.monotonic()
        policy_id, offer = _id_in_archive(data), itf.offer_digest(data, signature, nonce)
        try:
            new, trust = self._validate(data, signature)
        except Exception as e:  # noqa: BLE001 - anything wrong with it means: refuse it
            reason = f"{type(e).__name__}: {e}"
            policy_id = getattr(e, "policy_id", policy_id)
            self._announce(policy_id, itf.REFUSED, reason, offer)
            self.get_logger().error(f"refused checkpoint {policy_id} ({len(data)} bytes): "
                                    f"{reason}; policy {self.policy.id} keeps running")
            self._reannounce_active()
            return
        checked = f"validated in {time.monotonic() - t0:.2f} s ({trust})"
        with self._lock:
            running = new.id == self.policy.id
            at_once = not running and not self._serving
            if at_once:      # nothing has run on this server yet: from its first episode
                self.policy, self.pending = new, None
                self.runner = new.make_runner()
            elif not running:
                self.pending = new
        if running:
            self._announce(new.id, itf.ACTIVE, f"{checked}; already running it", offer)
        elif at_once:
            self._announce(new.id, itf.PENDING, f"{checked}; active at once: this server has "
                                                "taken no observation yet", offer)
            self.get_logger().info(f"checkpoint {new.id} active from the first episode "
                                   f"({trust})")
        else:
            self._announce(new.id, itf.PENDING, f"{checked}; active from the next episode "
                                                "start", offer)
            self.get_logger().info(f"checkpoint {new.id} pending until the next episode start")
        self._reannounce_active()

    def _validate(self, data: bytes, signature: str | None):
        """Check offered bytes -> (LoadedPolicy, what was checked); raise on any problem.

        The exception carries `policy_id` once the archive was loaded.
        """
        from mile_ros.learning.checkpoint import checkpoint_from_bytes
        from mile_ros.policy.serving import check_compatible, check_not_older, load_policy_dir

        # before anything is unpacked: only a station's key holder may replace its policy
        trust = verify_signature(data, signature, self._key, self.allow_unsigned)
        path = checkpoint_from_bytes(data, self._receive_dir)
        new = load_policy_dir(path, self.deterministic)
        try:
            with self._lock:
                running, pending = self.policy, self.pending
            check_compatible(new, pending or running, self.observation_names)
            check_not_older(new, running, pending)
        except Exception as e:
            e.policy_id = new.id
            raise
        return new, trust

    def _reannounce_active(self) -> None:
        """Announce the running policy again.

        The last word is always the running policy, for late joiners that keep only one.
        """
        with self._lock:
            running, pending = self.policy.id, self.pending
        self._announce(running, itf.ACTIVE,
                       "running" + (f"; {pending.id} pending" if pending else ""))

    def close(self) -> None:
        self._offers.put(None)
        self._worker.join(timeout=10.0)
        say(self, f"policy_server: {self.counts.summary()}")
        if self._own_receive_dir:
            shutil.rmtree(self._receive_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    from functools import partial

    from mile_ros.nodes._runtime import run_node

    # small networks, one tick at a time: torch threads only add contention
    return run_node(NODE, partial(PolicyServerNode, torch_threads=1), argv)


if __name__ == "__main__":
    sys.exit(main())
