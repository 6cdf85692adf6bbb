"""The simulated person: decides by the paper's probit model and acts only through Joy.

Two styles (`style`): "segments" (default) takes over when the hazard p(nu=1|s) fires, after a
reaction delay (`reaction_s`), drives with the expert for at least `dwell_s` and hands back once
p(s) has stayed below `handback_p` for `dwell_s` (mile_ros.sim.person.SegmentPerson), and with
`stall_s` > 0 also takes over a robot that has held still that long (every state value within
`stall_tol`); "paper" decides afresh every tick (the paper's Section V person; in toggle mode it
flickers). Each
episode starts the person afresh with its own seed (the `seed` parameter, the episode number and,
where set, `episode_stream`: one per simulated robot), so a run is deterministic per seed.

Every tick t it reads the observation(t) and the scripted expert's action for t
(`sim/expert_action`, published by the simulated arm and heard by no one else; the person never
sees a_r). The decision is mile_ros.sim.person's SimulatedPerson: p(nu=1|s) from the expert (a
Gaussian around the scripted action, `expert_sigma`) and a mental model pihat, with cost `c`
(< 0: calibrated so the initial policy would see `target_rate` interventions) and scale `beta`.
The mental model (`mental_model`): "initial" (default; the paper's Section V) is BC on rollouts
of the initial policy, fixed for good; "policy" is the policy the robot runs, the checkpoint
`mental_checkpoint` ("" = the initial policy) loaded when the node starts (`mile-ros demo` sets
it to the checkpoint it last delivered, every iteration), as a deterministic policy server
executes it: its mean action (sim/person.py ExecutedPolicy). c stays as calibrated on the
initial policy, so the person intervenes less where the robot's actions come closer to the
expert's.

It then moves the PS3 controller as a person would, through the arbiter's own Joy map (fetched from
the running arbiter's parameters, so a remapped controller is followed): taking over = a press of
the takeover button (rising edge; held in hold mode), sticks placed so the arbiter reads the
expert's action back; handing back = another press (toggle) or letting go (hold). Every Joy is
stamped with the tick it answers (the arbiter's `joy_sync` waits for it), and the last one is
re-sent at `keepalive_hz` like a real joystick driver so the arbiter's Joy watchdog stays quiet.
"""
from __future__ import annotations

import sys

import numpy as np
from rclpy.node import Node

from mile_ros import interfaces as itf
from mile_ros.learning.specs import FrameStacker
from mile_ros.nodes._runtime import say
from mile_ros.params import ConfigError, declare_node_parameters, resolve
from mile_ros.sim.person_driver import (
    JoyPlayer,
    build_person,
    calibration_episodes,
    check_mental_model,
    person_style,
)

NODE = "sim_human"
ARBITER = "arbiter"


class SimHumanNode(Node):
    def __init__(self, context, person_factory=build_person):
        super().__init__(NODE, context=context,
                         automatically_declare_parameters_from_overrides=True)
        self.p = declare_node_parameters(self, NODE)
        for name in ("expert_sigma", "keepalive_hz", "beta"):
            if not self.p[name] > 0:
                raise ConfigError(f"sim_human parameter '{name}' must be > 0, got {self.p[name]}")
        try:
            person_style(self.p)
            check_mental_model(self.p)
            calibration_episodes(self.p)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.person, self.info, self.state_names, k = person_factory(self.p)
        self.log_sigma = float(np.log(self.p["expert_sigma"]))
        self.frames = FrameStacker(k)
        self.pending: dict[int, dict] = {}       # stamp -> {"obs": ..., "expert": ...}
        self.last_stamp = 0
        self.stats = {"ticks": 0, "interventions": 0, "p_sum": 0.0, "takeovers": 0}
        self._last_nu = False
        self.episode_stats = dict(self.stats)
        self.player = None
        self._last_joy = None
        rates = {k: round(v, 3) for k, v in self.info.items()
                 if k.endswith("_rate") and isinstance(v, float)}
        self.get_logger().info(f"sim_human: c={self.info['c']:.4g} beta={self.info['beta']} "
                               f"(on the initial policy: {rates}); mental model: "
                               f"{self.info.get('mental_model', 'initial')}")

    # --- set-up: the arbiter's Joy map -----------------------------------------------------------
    def _arbiter_params(self, executor, timeout_s: float) -> dict | None:
        from rcl_interfaces.srv import GetParameters, ListParameters
        from rclpy.parameter import parameter_value_to_python

        prefix = f"{ARBITER}/"
        lister = self.create_client(ListParameters, prefix + "list_parameters")
        getter = self.create_client(GetParameters, prefix + "get_parameters")
        try:
            if not (lister.wait_for_service(timeout_sec=timeout_s)
                    and getter.wait_for_service(timeout_sec=timeout_s)):
                return None
            future = lister.call_async(ListParameters.Request())
            executor.spin_until_future_complete(future, timeout_sec=timeout_s)
            if future.result() is None:
                return None
            names = list(future.result().result.names)
            future = getter.call_async(GetParameters.Request(names=names))
            executor.spin_until_future_complete(future, timeout_sec=timeout_s)
            if future.result() is None:
                return None
            return {n: parameter_value_to_python(v) for n, v in zip(names, future.result().values)}
        finally:
            self.destroy_client(lister)
            self.destroy_client(getter)

    def setup(self, executor) -> None:
        from sensor_msgs.msg import JointState, Joy
        from std_msgs.msg import String

        from mile_ros.teleop.arbiter import ArbiterConfig, JoyMap

        live = self._arbiter_params(executor, self.p["arbiter_timeout_s"])
        base = resolve(ARBITER)
        if live is None:
            self.get_logger().warning(f"the arbiter did not answer within "
                                      f"{self.p['arbiter_timeout_s']} s: "
                                      f"using the shipped Joy map")
            live = {}
        values = {k: live.get(k, v) for k, v in base.items()}
        cfg = ArbiterConfig.from_params(values)
        self.action_names = list(cfg.action_names)
        self.player = JoyPlayer(JoyMap(cfg), cfg.mode, values["axis_count"],
                                len(values["button_layout"]))
        self._Joy = Joy
        self.joy_pub = self.create_publisher(Joy, itf.JOY, 10)
        self.create_subscription(String, itf.EPISODE, self._on_episode, 20)
        self.create_subscription(JointState, itf.OBSERVATION, self._on_observation, 10)
        # Created last: the simulated arm starts the first episode once this has a subscriber.
        self.create_subscription(JointState, itf.SIM_EXPERT_ACTION, self._on_expert, 10)
        self.create_timer(1.0 / self.p["keepalive_hz"], self._keepalive)
        self.get_logger().info(f"sim_human ready: {cfg.mode} mode, takeover button index "
                               f"{cfg.buttons['takeover']}, "
                               f"axes {dict(zip(cfg.action_names, cfg.axes))}")

    # --- per tick --------------------------------------------------------------------------------
    def _publish(self, joy, stamp_ns: int) -> None:
        axes, buttons = joy
        msg = self._Joy()
        msg.header.stamp = itf.ns_to_stamp(stamp_ns)
        msg.axes = [float(a) for a in axes]
        msg.buttons = [int(b) for b in buttons]
        self.joy_pub.publish(msg)

    def _keepalive(self) -> None:
        if self.player is not None:
            self._publish(self._last_joy or self.player.idle(), self.last_stamp)

    def _on_episode(self, msg) -> None:
        try:
            event = itf.parse_episode_event(msg.data)
        except ValueError:
            return
        if event["event"] == "start":
            self.frames.clear()
            self.person.reseed(self._episode_seed(int(event.get("episode", 0))))
            self._last_nu = False
            self.episode_stats = dict(self.stats)
        else:
            d = {k: self.stats[k] - self.episode_stats[k] for k in self.stats}
            self.get_logger().info(f"episode {event['episode']}: intervened on "
                                   f"{d['interventions']}/{d['ticks']} ticks in "
                                   f"{d['takeovers']} takeover(s)")

    def _episode_seed(self, episode: int) -> tuple:
        """(seed, episode), and the `episode_stream` when set (several simulated robots)."""
        stream = self.p["episode_stream"]
        return (self.p["seed"], episode) if stream == 0 else (self.p["seed"], episode, stream)

    def _on_observation(self, msg) -> None:
        try:
            state = itf.vector_from_msg(msg, self.state_names)
        except ValueError as e:
            self.get_logger().error(f"observation unusable: {e}", throttle_duration_sec=5.0)
            return
        self._arrive(itf.stamp_to_ns(msg.header.stamp), "obs", state)

    def _on_expert(self, msg) -> None:
        try:
            action = itf.vector_from_msg(msg, self.action_names)
        except ValueError as e:
            self.get_logger().error(f"expert action unusable: {e}", throttle_duration_sec=5.0)
            return
        self._arrive(itf.stamp_to_ns(msg.header.stamp), "expert", action)

    def _arrive(self, stamp: int, kind: str, value) -> None:
        if stamp <= self.last_stamp:
            return
        entry = self.pending.setdefault(stamp, {})
        entry[kind] = value
        if len(entry) == 2:
            for old in [s for s in self.pending if s <= stamp]:
                del self.pending[old]
            self._decide(stamp, entry["obs"], entry["expert"])
        elif len(self.pending) > 50:  # an orphan half-tick; forget the oldest
            del self.pending[min(self.pending)]

    def _decide(self, stamp: int, state: np.ndarray, expert_action: np.ndarray) -> None:
        from mile_ros.sim.experts import ExpertInfo

        stacked = self.frames.step(state)
        mu = np.clip(expert_action, -1.0, 1.0)
        info = ExpertInfo(action=mu, mean=mu, log_std=np.full_like(mu, self.log_sigma))
        nu, a_h, p = self.person.decide(stacked, info)
        self.stats["ticks"] += 1
        self.stats["interventions"] += int(nu)
        self.stats["takeovers"] += int(nu and not self._last_nu)
        self._last_nu = bool(nu)
        self.stats["p_sum"] += p
        joys = self.player.tick(nu, a_h)
        for i, joy in enumerate(joys):  # earlier presses/releases carry an earlier stamp
            self._publish(joy, stamp - (len(joys) - 1 - i))
        self._last_joy = joys[-1]
        self.last_stamp = stamp

    def close(self) -> None:
        s = self.stats
        rate = s["interventions"] / max(s["ticks"], 1)
        say(self, f"sim_human: {s['interventions']}/{s['ticks']} ticks intervened ({rate:.1%}) "
                  f"in {s['takeovers']} takeover(s); "
                  f"mean p={s['p_sum'] / max(s['ticks'], 1):.3f}")


def main(argv: list[str] | None = None) -> int:
    import torch

    from mile_ros.nodes._runtime import run_node

    torch.set_num_threads(1)  # small networks, one tick at a time: threads only add contention

    return run_node(NODE, SimHumanNode, argv)


if __name__ == "__main__":
    sys.exit(main())
