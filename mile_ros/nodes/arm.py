"""The arm node: publishes the arm's state every control tick and applies the commanded action.

Tick t:  [sim: `sim/expert_action`(t), for the simulated person only]
         -> `observation`(t), `joint_states`(t), `ee_pose`(t)
         -> wait for `command` stamped t -> check it -> apply it (or hold) -> next tick.

A command is applied only for the tick it is stamped with; one that is missing when the tick's
time is up means hold (never repeat an old motion). Non-finite commands are rejected and counted;
every dimension is clamped to [-1, 1] and the backend keeps the end effector inside the workspace.

Pacing (sim): `realtime_factor` 1.0 follows the wall clock, 2.0 twice as fast, 0.0 is lockstep:
the next tick starts as soon as the command for this one arrives, or after `lockstep_timeout_s`
(then the arm holds). The real arm always follows the wall clock.

Episodes (sim): the arm resets the task, publishes `episode` start/end events (success/timeout),
and after `episodes` episodes (0 = no limit) exits with status 0. The first episode starts once the
nodes named in `wait_for_nodes` are up, with their endpoints (at most `startup_timeout_s`).

Refusals: with a backend that counts the commands it refused to send (`ik_refusals`, the real
arm), the arm publishes `arm/refused`(t) after applying each tick's command: 1.0 when that command
was refused (held instead), 0.0 otherwise, stamped with the tick like the other step topics. The
recorder files it into the episode by its stamp and seals it with the tick, so every episode bag,
whoever ended the episode, holds its refusals (metadata `ik_refusals`). The end events the arm
publishes itself carry the episode's count too (`ik_refusals`); for episodes decided elsewhere (the
arbiter's buttons) the count is logged at their end event and kept in `episode_refusals`. The
simulated arm never refuses a command (it clamps into the workspace) and counts nothing: no
`arm/refused`, no `ik_refusals` in its end events, `ik_refusals: null` in its bags.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field, fields, replace

import numpy as np
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.node import Node

from mile_ros import interfaces as itf
from mile_ros.arms import ACTION_NAMES, check_arm_params, make_backend
from mile_ros.nodes._runtime import say
from mile_ros.params import declare_node_parameters

RCLError = rclpy_implementation.RCLError

NODE = "arm"
# Private to the simulation: the scripted expert's action for tick t (only sim_human listens).
EVENT_LEAD_S = 0.05
GRAPH_SETTLE_S = 1.5  # after the graph is seen complete: time for the others to match too

# A node of the graph counts as up once it has these endpoints, not when its name appears: the
# policy server, for one, is visible while it still loads its checkpoint (an episode started then
# records ticks without a_r only).
READY_ENDPOINTS = {  # node: (topics it publishes, topics it subscribes)
    "policy_server": ((itf.ACTION_ROBOT,), (itf.OBSERVATION,)),
    "arbiter": ((itf.COMMAND, itf.INTERVENTION), (itf.OBSERVATION, itf.ACTION_ROBOT)),
    "recorder": ((), (itf.OBSERVATION, itf.ACTION_ROBOT, itf.INTERVENTION)),
    "sim_human": ((), (itf.SIM_EXPERT_ACTION,)),
    "camera": ((itf.IMAGE,), ()),
}


@dataclass
class ArmStats:
    ticks: int = 0
    applied: int = 0
    held_missing: int = 0      # no command for the tick in time
    rejected_nonfinite: int = 0
    malformed: int = 0         # wrong names / lengths
    clipped: int = 0           # some dimension outside [-1, 1]
    late: int = 0              # commands stamped with another tick
    overruns: int = 0          # ticks that started later than one period behind schedule
    ik_refusals: int | None = None  # commands the backend refused to send (None: it does not say)
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        rate = self.ticks / max(time.monotonic() - self.started, 1e-9)
        return (f"ticks={self.ticks} ({rate:.1f}/s) applied={self.applied} "
                f"held(no command)={self.held_missing} "
                f"rejected(non-finite)={self.rejected_nonfinite} "
                f"malformed={self.malformed} clipped={self.clipped} late={self.late} "
                f"overruns={self.overruns}"
                + ("" if self.ik_refusals is None else f" ik_refusals={self.ik_refusals}"))

    def snapshot(self) -> ArmStats:
        """Copy the counts now, timed from now: an episode's starting point for `since`."""
        return replace(self, started=time.monotonic())

    def since(self, start: ArmStats) -> ArmStats:
        """Count only what happened after the snapshot `start`, rated over that time."""
        counts = {f.name: getattr(self, f.name) - getattr(start, f.name) for f in fields(self)
                  if f.name not in ("started", "ik_refusals")}
        refusals = (None if self.ik_refusals is None
                    else self.ik_refusals - (start.ik_refusals or 0))
        return ArmStats(**counts, ik_refusals=refusals, started=start.started)


def check_command(values: np.ndarray, stats: ArmStats) -> np.ndarray | None:
    """Return a command safe to apply, or None (hold).

    Non-finite -> rejected; clamp to [-1, 1].
    """
    if not np.all(np.isfinite(values)):
        stats.rejected_nonfinite += 1
        return None
    if np.any(np.abs(values) > 1.0):
        stats.clipped += 1
    return np.clip(values, -1.0, 1.0)


class ArmNode(Node):
    def __init__(self, context, backend_factory=make_backend):
        super().__init__(NODE, context=context,
                         automatically_declare_parameters_from_overrides=True)
        from geometry_msgs.msg import PoseStamped
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String

        self.p = p = declare_node_parameters(self, NODE)
        check_arm_params(p)
        robot_name = self.get_namespace().strip("/")
        self.backend = backend_factory(p, robot_name)
        self.base_frame = f"{robot_name}/base_link" if robot_name else "base_link"  # Interbotix TF
        self.action_names = list(ACTION_NAMES)
        self.period = 1.0 / p["control_rate_hz"]
        self.lockstep = self.backend.owns_episodes and p["realtime_factor"] == 0.0
        speed = p["realtime_factor"] if self.backend.owns_episodes and not self.lockstep else 1.0
        self.tick_interval = self.period / speed
        # the tick rate the recorder should expect (lockstep: the nominal rate, as a floor)
        self.expected_rate_hz = p["control_rate_hz"] * (1.0 if self.lockstep else speed)
        self.stats = ArmStats()
        self._PoseStamped, self._String = PoseStamped, String

        # deep: a stalled reader (policy server, recorder) must not lose ticks while the arm,
        # in lockstep with the person driving, runs ahead of it
        self.obs_pub = self.create_publisher(JointState, itf.OBSERVATION, 1000)
        self.js_pub = (self.create_publisher(JointState, itf.JOINT_STATES, 10)
                       if self.backend.publishes_joint_states else None)
        self.pose_pub = self.create_publisher(PoseStamped, itf.EE_POSE, 10)
        self.episode_pub = self.create_publisher(String, itf.EPISODE, itf.episode_qos())
        self.expert_pub = (self.create_publisher(JointState, itf.SIM_EXPERT_ACTION, 10)
                           if self.backend.has_expert else None)
        self.create_subscription(JointState, itf.COMMAND, self._on_command, 10)
        self.refused_pub = (self.create_publisher(JointState, itf.ARM_REFUSED, itf.control_qos())
                            if self._refusals() is not None else None)
        self.episode_refusals: dict[int, int] = {}   # episode -> refusals (episodes not ours)
        self._refusals_at_start = None               # (episode, count) at its start event
        if not self.backend.owns_episodes and self._refusals() is not None:
            self.create_subscription(String, itf.EPISODE, self._on_episode_event,
                                     itf.episode_qos())

        self._cv = threading.Condition()
        self._awaiting = None          # stamp of the tick whose command we wait for
        self._command = None
        self._last_stamp = 0
        self._stop = threading.Event()
        self._episode = None           # index of the episode in progress (sim)
        self._at_start = None          # the backend's refusal count when it started
        self.get_logger().info(
            f"arm: backend={p['backend']} rate={p['control_rate_hz']} Hz "
            + ("lockstep" if self.lockstep else f"x{speed:g} wall clock")
            + f", observation={self.backend.observation_names}")

    # --- subscriptions (executor thread) ---------------------------------------------------------
    def _on_command(self, msg) -> None:
        stamp = itf.stamp_to_ns(msg.header.stamp)
        with self._cv:
            if stamp != self._awaiting or self._command is not None:
                self.stats.late += 1
                return
            try:
                values = itf.vector_from_msg(msg, self.action_names)
            except ValueError as e:
                self.stats.malformed += 1
                self.get_logger().warning(f"command for tick {stamp} ignored: {e}",
                                          throttle_duration_sec=5.0)
                return
            self._command = values
            self._cv.notify_all()

    def _on_episode_event(self, msg) -> None:
        """Episodes decided elsewhere: log how many commands were refused during each."""
        try:
            event = itf.parse_episode_event(msg.data)
        except ValueError:
            return
        episode = int(event["episode"])
        if event["event"] == "start":
            self._refusals_at_start = (episode, self._refusals())
        elif self._refusals_at_start is not None and self._refusals_at_start[0] == episode:
            n = self._refusals() - self._refusals_at_start[1]
            self.episode_refusals[episode] = n
            self._refusals_at_start = None
            self.get_logger().info(f"episode {episode} ended ({event.get('reason')}): "
                                   f"{n} arm commands refused (IK, limits or driver)")

    def _refusals(self) -> int | None:
        return getattr(self.backend, "ik_refusals", None)

    def _apply(self, t: int, command: np.ndarray | None):
        """Apply tick t's command (None: hold); publish `arm/refused`(t) if the backend counts."""
        before = self._refusals()
        outcome = self.backend.apply(command)
        if self.refused_pub is not None:
            refused = float((self._refusals() or 0) > (before or 0))
            self.refused_pub.publish(itf.vector_msg(itf.REFUSED_NAMES, [refused], t))
        return outcome

    def _refusal_fields(self, at_start: int | None) -> dict:
        """Return the end event's `ik_refusals` (this episode's), when the backend counts them."""
        now = self._refusals()
        return {} if now is None else {"ik_refusals": now - (at_start or 0)}

    # --- one tick -------------------------------------------------------------------------------
    def _next_stamp(self) -> int:
        now = self.get_clock().now().nanoseconds
        self._last_stamp = max(now, self._last_stamp + 1)
        return self._last_stamp

    def _publish_state(self, t: int) -> None:
        b = self.backend
        self.obs_pub.publish(itf.vector_msg(b.observation_names, b.observation(), t))
        if self.js_pub is not None:
            self.js_pub.publish(itf.vector_msg(b.joint_names, b.joint_positions(), t))
        pos, quat = b.ee_pose()
        pose = self._PoseStamped()
        pose.header.stamp = itf.ns_to_stamp(t)
        pose.header.frame_id = self.base_frame
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (float(v) for v in pos)
        (pose.pose.orientation.w, pose.pose.orientation.x, pose.pose.orientation.y,
         pose.pose.orientation.z) = (float(v) for v in quat)
        self.pose_pub.publish(pose)

    def _publish_expert(self, t: int) -> None:
        """Sim: publish the scripted expert's action for tick t, for the simulated person only.

        Sent before the observation; the arbiter (joy_sync) waits for the person's Joy(t).
        """
        if self.expert_pub is not None:
            self.expert_pub.publish(
                itf.vector_msg(self.action_names, self.backend.expert_action(), t))

    def _tick(self, tick_start: float, t: int | None = None) -> tuple[int, np.ndarray | None]:
        """Publish tick t and wait for its command; returns (t, checked command or None)."""
        t = self._next_stamp() if t is None else t
        with self._cv:
            self._awaiting, self._command = t, None
        deadline = tick_start + (self.p["lockstep_timeout_s"] if self.lockstep
                                 else self.tick_interval)
        self._publish_expert(t)
        self._publish_state(t)
        with self._cv:
            self._cv.wait_for(lambda: self._command is not None or self._stop.is_set(),
                              timeout=max(0.0, deadline - time.monotonic()))
            values, self._awaiting = self._command, None
        self.stats.ticks += 1
        if values is None:
            self.stats.held_missing += 1
            return t, None
        command = check_command(values, self.stats)
        if command is not None:
            self.stats.applied += 1
        return t, command

    def _pace(self, tick_start: float) -> float:
        """Sleep until the next tick is due (not in lockstep); returns its start time."""
        now = time.monotonic()
        if self.lockstep:
            return now
        nxt = tick_start + self.tick_interval
        if now > nxt + self.tick_interval:
            self.stats.overruns += 1
            return now
        if nxt > now:
            self._stop.wait(nxt - now)
        return nxt

    # --- main loops -----------------------------------------------------------------------------
    def run(self, executor) -> int:
        spinner = threading.Thread(target=self._spin, args=(executor,), daemon=True)
        spinner.start()
        try:
            return self._run_episodes() if self.backend.owns_episodes else self._run_continuous()
        finally:
            if self._episode is not None and self.context.ok():  # stopped mid-episode
                try:
                    self._publish_event(itf.episode_event("end", self._episode, self._last_stamp,
                                                          success=None, reason="shutdown",
                                                          **self._refusal_fields(self._at_start)))
                except RCLError:  # Ctrl-C shut the context down after the check: best effort
                    say(self, "arm: stopped mid-episode; the recorder closes the bag itself")
            self._stop.set()
            spinner.join(timeout=2.0)
            self.stats.ik_refusals = self._refusals()
            say(self, "arm: " + self.stats.summary())

    def _spin(self, executor) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            while not self._stop.is_set() and self.context.ok():
                executor.spin_once(timeout_sec=0.05)
        except ExternalShutdownException:  # Ctrl-C: the main loop sees it too
            self._stop.set()

    def _run_continuous(self) -> int:
        tick_start = time.monotonic()
        while not self._stop.is_set():
            t, command = self._tick(tick_start)
            self._apply(t, command)  # None: hold (nothing is sent)
            tick_start = self._pace(tick_start)
        return 0

    def _wait_for_graph(self) -> None:
        if self.p["startup_timeout_s"] <= 0:
            return
        wanted = set(self.p["wait_for_nodes"]) - {""}
        ns = self.get_namespace()
        give_up = time.monotonic() + self.p["startup_timeout_s"]
        while not self._stop.is_set():
            present = {n for n, node_ns in self.get_node_names_and_namespaces() if node_ns == ns}
            missing = {n for n in wanted if n not in present or not self._has_endpoints(n, ns)}
            person_ready = (self.expert_pub is None or "sim_human" not in wanted
                            or self.expert_pub.get_subscription_count() > 0)
            ready = (not missing and person_ready and self.obs_pub.get_subscription_count() > 0
                     and self.count_publishers(self.resolve_topic_name(itf.COMMAND)) > 0)
            if ready:
                # Seen from here, every endpoint exists; the other nodes' subscriptions among
                # themselves (the recorder's and the arbiter's to a_r, ...) match on their own
                # discovery, which took over 0.5 s under load (a demo episode lost every a_r).
                self._stop.wait(GRAPH_SETTLE_S)
                return
            if time.monotonic() > give_up:
                self.get_logger().warning(f"starting without nodes {sorted(missing)} "
                                          f"after {self.p['startup_timeout_s']} s")
                return
            self._stop.wait(0.1)

    def _has_endpoints(self, node: str, ns: str) -> bool:
        """Whether `node` (in `ns`) has the endpoints READY_ENDPOINTS names for it."""
        pubs, subs = READY_ENDPOINTS.get(node, ((), ()))
        try:
            have_pubs = {t for t, _ in self.get_publisher_names_and_types_by_node(node, ns)}
            have_subs = {t for t, _ in self.get_subscriber_names_and_types_by_node(node, ns)}
        except RCLError:  # the node left the graph between the two queries
            return False
        return (all(self.resolve_topic_name(t) in have_pubs for t in pubs)
                and all(self.resolve_topic_name(t) in have_subs for t in subs))

    def _publish_event(self, text: str) -> None:
        self.episode_pub.publish(self._String(data=text))

    def _run_episodes(self) -> int:
        self._wait_for_graph()
        limit, episode = self.p["episodes"], 0
        while not self._stop.is_set() and (limit == 0 or episode < limit):
            seed = self.p["seed"] + episode
            self.backend.reset(seed)
            first = self._next_stamp()  # the start event carries the first tick's stamp
            self._publish_event(itf.episode_event("start", episode, first, seed=seed,
                                                  control_rate_hz=self.expected_rate_hz))
            self._episode, self._at_start = episode, self._refusals()
            at_start = self.stats.snapshot()
            # A moment for the event to arrive before the first observation: the policy server
            # resets its frame history (and swaps checkpoints) on it, the recorder opens a bag.
            self._stop.wait(EVENT_LEAD_S)
            tick_start = time.monotonic()
            while not self._stop.is_set():
                t, command = self._tick(tick_start, first)
                first = None
                outcome = self._apply(t, command)  # None: hold
                if outcome.done:
                    self._episode = None
                    self._publish_event(itf.episode_event("end", episode, t,
                                                          success=outcome.success,
                                                          reason=outcome.reason,
                                                          **self._refusal_fields(self._at_start)))
                    self.stats.ik_refusals = self._refusals()
                    self.get_logger().info(f"episode {episode} ended: {outcome.reason}; "
                                           + self.stats.since(at_start).summary())
                    break
                tick_start = self._pace(tick_start)
            episode += 1
        if limit and episode >= limit:
            self._stop.wait(1.0)  # let the last end event reach every subscriber
        return 0

    def request_stop(self) -> None:
        """End the main loop (SIGINT/SIGTERM, through the node runtime)."""
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self.backend.close()


def main(argv: list[str] | None = None) -> int:
    from mile_ros.nodes._runtime import run_node

    return run_node(NODE, ArmNode, argv)


if __name__ == "__main__":
    sys.exit(main())
