"""The simulated person's hands: its Joy messages make the arbiter do what the person decided.

The Joy messages it sends make the arbiter's real state machine do exactly what the person
decided, with the expert's action read back as a_h.
"""
import numpy as np
import pytest

from mile_ros import params
from mile_ros.sim.person_driver import JoyPlayer
from mile_ros.teleop.arbiter import ArbiterConfig, ArbiterLogic, JoyMap

DECISIONS = [0, 1, 0, 1, 1, 1, 0, 0, 1, 0, 1, 1, 0]   # includes a press on every tick (1, 0, 1)


def play(mode, decisions, **arbiter_overrides):
    values = params.resolve("arbiter", [], {"mode": mode, **arbiter_overrides})
    cfg = ArbiterConfig.from_params(values)
    logic = ArbiterLogic(cfg)
    player = JoyPlayer(JoyMap(cfg), cfg.mode, values["axis_count"], len(values["button_layout"]))
    rng = np.random.default_rng(0)
    now, stamp = 100.0, 10_000
    logic.on_joy(*player.idle(), now, stamp - 5)          # the controller is connected
    ticks, experts = [], []
    for nu in decisions:
        now += 0.05
        stamp += 50
        expert = np.clip(rng.normal(scale=0.6, size=4), -1, 1)
        joys = player.tick(bool(nu), expert if nu else None)
        for i, (axes, buttons) in enumerate(joys):
            assert (len(axes) == values["axis_count"]
                    and len(buttons) == len(values["button_layout"]))
            logic.on_joy(axes, buttons, now, stamp - (len(joys) - 1 - i))
        out = logic.on_observation(stamp, now) + logic.on_action_robot(stamp, np.zeros(4), now)
        assert len(out) == 1
        ticks.append(out[0])
        experts.append(expert)
    return ticks, experts


@pytest.mark.parametrize("mode", ["toggle", "hold"])
@pytest.mark.parametrize("overrides", [
    {}, {"deadzone": 0.1, "axis_sign": [1.0, -1.0, 1.0, -1.0]},
    {"axes.dx": 3, "axes.gripper": 1, "buttons.takeover": "l1"}])
def test_arbiter_follows_every_decision(mode, overrides):
    ticks, experts = play(mode, DECISIONS, **overrides)
    assert [int(t.nu) for t in ticks] == DECISIONS
    for t, expert, nu in zip(ticks, experts, DECISIONS):
        if nu:
            np.testing.assert_allclose(t.a_h, expert, atol=1e-9)
        else:
            assert t.a_h is None


def test_toggle_presses_are_edges_with_a_release_in_between():
    values = params.resolve("arbiter", [], {})
    cfg = ArbiterConfig.from_params(values)
    player = JoyPlayer(JoyMap(cfg), "toggle", values["axis_count"], len(values["button_layout"]))
    takeover = cfg.buttons["takeover"]
    first = player.tick(True, np.zeros(4))
    assert [j[1][takeover] for j in first] == [1]
    second = player.tick(False, None)                  # hand back on the very next tick
    assert [j[1][takeover] for j in second] == [0, 1]   # let go, press again
    third = player.tick(False, None)
    assert [j[1][takeover] for j in third] == [0]
    assert all(a == 0.0 for a in third[0][0])          # sticks centred when not driving


def test_bad_value_is_a_clear_startup_error():
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run([sys.executable, "-m", "mile_ros.nodes.sim_human", "--ros-args",
                           "-r", "__ns:=/sim_human_cfg", "-p", "expert_sigma:=0.0"],
                          capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2, proc.stderr
    assert "'expert_sigma'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("override, needle", [("style:=flicker", "'style'"),
                                              ("dwell_s:=0.0", "'dwell_s'"),
                                              ("reaction_s:=-0.1", "'reaction_s'"),
                                              ("handback_p:=1.0", "'handback_p'"),
                                              ("stall_s:=-1.0", "'stall_s'"),
                                              ("mental_model:=frozen", "'mental_model'"),
                                              ("calibration_episodes:=-1",
                                               "'calibration_episodes'")])
def test_bad_person_style_is_a_clear_startup_error(override, needle):
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run([sys.executable, "-m", "mile_ros.nodes.sim_human", "--ros-args",
                           "-r", "__ns:=/sim_human_style", "-p", override],
                          capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "configuration error" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_person_style_turns_seconds_into_ticks_at_the_control_rate():
    from mile_ros.sim.person_driver import person_style

    p = params.resolve("sim_human")
    assert p["style"] == "segments" and p["control_rate_hz"] == params.resolve(
        "arm")["control_rate_hz"]                                 # shared from the arm
    assert person_style(p) == {"person": "segments", "reaction_ticks": 6, "dwell_ticks": 10,
                               "handback_p": 0.1, "stall_ticks": 0,
                               "stall_tol": 0.003}                # 0.3 s, 0.5 s at 20 Hz
    fast = person_style({**p, "control_rate_hz": 50.0, "dwell_s": 0.001, "style": "paper"})
    assert fast["person"] == "paper" and fast["reaction_ticks"] == 15
    assert fast["dwell_ticks"] == 1                               # never shorter than a tick
    stall = person_style({**p, "stall_s": 1.0})["stall_ticks"]
    assert stall == 20 and person_style({**p, "stall_s": 0.001})["stall_ticks"] == 1


class RecordingPerson:
    """Stands in for the calibrated person: records how the node restarts it."""

    def __init__(self):
        self.seeds = []

    def reseed(self, seed):
        self.seeds.append(seed)


def test_each_episode_starts_the_person_afresh_from_seed_and_episode():
    import json

    import rclpy
    from std_msgs.msg import String

    from mile_ros.nodes.sim_human import SimHumanNode

    person = RecordingPerson()
    context = rclpy.Context()
    rclpy.init(context=context, args=["x", "--ros-args", "-p", "seed:=7",
                                      "-r", "__ns:=/sim_human_reseed"])
    try:
        node = SimHumanNode(context, lambda p: (person, {"c": 1.0, "beta": 1.0}, ["x"], 2))
        for episode in (0, 1, 1):
            node.frames.step(np.zeros(1))
            node._on_episode(String(data=json.dumps({"event": "start", "episode": episode,
                                                     "stamp_ns": 1})))
            assert (node.frames.step(np.ones(1)) == 1.0).all()   # no frame of the last one
        node._on_episode(String(data=json.dumps({"event": "end", "episode": 1,
                                                 "stamp_ns": 2})))
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    assert person.seeds == [(7, 0), (7, 1), (7, 1)]   # same episode, same stream
    node_seed = SimHumanNode._episode_seed
    assert node_seed(type("N", (), {"p": {"seed": 7, "episode_stream": 2}})(), 1) == (7, 1, 2)
