"""The takeover state machine, transition by transition, plus a fuzz test of random Joy input."""
import json
import math

import numpy as np
import pytest

from mile_ros import params
from mile_ros.interfaces import parse_episode_event
from mile_ros.params import ConfigError
from mile_ros.teleop.arbiter import (
    AUTONOMOUS,
    ESTOP,
    JOY_LOST,
    TAKEN_OVER,
    ArbiterConfig,
    ArbiterLogic,
    apply_deadzone,
)

PERIOD = 0.05


def make(**overrides):
    p = params.resolve("arbiter", overrides={"handback_ramp_s": 0.0, **overrides})
    return ArbiterLogic(ArbiterConfig.from_params(p))


class Driver:
    """Feeds one tick at a time: Joy (the person's current state), observation, a_r."""

    def __init__(self, logic):
        self.logic, self.map, self.t, self.stamp = logic, logic.map, 0.0, 0
        self.action, self.held = np.zeros(4), set()

    def joy(self, action=None, pressed=None, dt=0.0):
        """Send a Joy message; `pressed` None keeps the buttons as they are."""
        self.t += dt
        if action is not None:
            self.action = np.asarray(action, float)
        if pressed is not None:
            self.held = set(pressed)
        axes, buttons = self.map.joy_for(self.action, self.held, n_axes=6, n_buttons=17)
        return self.logic.on_joy(axes, buttons, self.t, stamp_ns=self.stamp)

    def press(self, role, **kw):
        """Send a press and release, as two Joy messages."""
        ticks = self.joy(pressed=self.held | {role}, **kw)
        return ticks + self.joy(pressed=self.held - {role})

    def tick(self, a_r=(0.1, 0.2, 0.3, 0.4), joy=True, a_r_delay=0.002):
        """One control period: observation(t), a Joy message, then a_r(t) (None: never comes)."""
        self.t += PERIOD
        self.stamp += int(PERIOD * 1e9)
        ticks = self.logic.on_observation(self.stamp, self.t)
        if joy:
            ticks += self.joy(dt=0.001)
        if a_r is not None:
            self.t += a_r_delay
            ticks += self.logic.on_action_robot(self.stamp, list(a_r), self.t)
        else:
            self.t += PERIOD * 0.99
            ticks += self.logic.on_deadline(self.t)
        assert len(ticks) == 1 and ticks[0].stamp_ns == self.stamp, ticks
        return ticks[0]


def drive(**overrides):
    d = Driver(make(**overrides))
    d.joy()
    return d


# --- configuration ------------------------------------------------------------------------------
@pytest.mark.parametrize("override, names", [
    ({"buttons.takeover": "r5"}, ["buttons.takeover", "r5"]),
    ({"buttons.estop": "r1"}, ["buttons.estop", "buttons.takeover"]),
    ({"axes.dz": 6}, ["axes.dz", "axis_count"]),
    ({"axes.dx": -1}, ["axes.dx"]),
    ({"axis_sign": [1.0, 1.0]}, ["axis_sign"]),
    ({"axis_sign": [1.0, 0.0, 1.0, 1.0]}, ["axis_sign"]),
    ({"mode": "deadman"}, ["mode", "deadman"]),
    ({"hold_keep": ["wrist"]}, ["hold_keep", "wrist"]),
    ({"deadzone": 1.0}, ["deadzone"]),
    ({"joy_timeout_s": 0.0}, ["joy_timeout_s"]),
    ({"a_r_timeout_s": -0.1}, ["a_r_timeout_s"]),
    ({"action_names": ["dx", "dy", "dz", "roll"]}, ["axes.roll"]),
])
def test_bad_configuration_names_the_parameter(override, names):
    with pytest.raises(ConfigError) as e:
        make(**override)
    for name in names:
        assert name in str(e.value)


def test_shipped_map_is_hid_sony():
    cfg = make().cfg
    assert (cfg.buttons["takeover"] == 5 and cfg.buttons["estop"] == 10
            and cfg.buttons["reset"] == 9)
    assert cfg.axes == (1, 0, 4, 3) and cfg.ramp_ticks == 0
    assert ArbiterConfig.from_params(params.resolve("arbiter")).ramp_ticks == 10


def test_stick_mapping_signs_deadzone_and_inverse():
    logic = make(deadzone=0.1)
    axes = [0.0] * 6
    axes[1], axes[0], axes[4], axes[3] = -1.0, 0.05, 0.55, 1.0   # stick up, tiny left, down, right
    a, problem = logic.map.action(axes)
    assert problem is None
    np.testing.assert_allclose(a, [1.0, 0.0, -0.5, 1.0])
    assert apply_deadzone(-0.1, 0.1) == 0.0 and apply_deadzone(-1.0, 0.1) == -1.0
    for action in ([0.3, -0.7, 0.0, 1.0], [-1.0, 0.05, 0.9, -0.25]):
        back, _ = logic.map.action(logic.map.joy_for(action)[0])
        np.testing.assert_allclose(back, action, atol=1e-12)


# --- autonomous ---------------------------------------------------------------------------------
def test_autonomous_tick_waits_for_matching_a_r():
    d = drive()
    assert d.logic.on_observation(1000, 0.0) == []
    assert d.logic.on_action_robot(999, [0.5] * 4, 0.001) == []      # an older a_r decides nothing
    [tick] = d.logic.on_action_robot(1000, [0.5, -0.5, 0.25, 2.0], 0.002)
    assert (tick.stamp_ns, tick.nu, tick.hold, tick.estop) == (1000, False, False, False)
    assert tick.a_h is None and tick.state == AUTONOMOUS
    np.testing.assert_allclose(tick.command, [0.5, -0.5, 0.25, 1.0])   # clamped
    assert d.logic.counts["clamped_a_r"] == 1


def test_a_r_arriving_before_its_observation_is_kept():
    d = drive()
    assert d.logic.on_action_robot(2000, [0.3] * 4, 0.0) == []
    [tick] = d.logic.on_observation(2000, 0.001)
    np.testing.assert_allclose(tick.command, [0.3] * 4)


def test_duplicate_observation_is_ignored():
    d = drive()
    d.logic.on_observation(1000, 0.0)
    assert d.logic.on_observation(1000, 0.001) == [] and d.logic.pending.stamp_ns == 1000


# --- toggle and hold modes ----------------------------------------------------------------------
def test_toggle_takeover_and_handback():
    d = drive()
    assert d.tick().nu is False
    d.joy(action=[0.5, 0.0, -0.5, 1.0])
    d.press("takeover")
    assert d.logic.state == TAKEN_OVER
    tick = d.tick(a_r=(0.9, 0.9, 0.9, 0.9))
    assert tick.nu and not tick.hold and tick.state == TAKEN_OVER
    np.testing.assert_allclose(tick.command, [0.5, 0.0, -0.5, 1.0])
    np.testing.assert_allclose(tick.a_h, tick.command)
    d.joy(action=[-0.25, 0.25, 0.0, 0.0])
    np.testing.assert_allclose(d.tick().a_h, [-0.25, 0.25, 0.0, 0.0])
    d.press("takeover")
    tick = d.tick(a_r=(0.9, 0.9, 0.9, 0.9))
    assert d.logic.state == AUTONOMOUS and not tick.nu and tick.a_h is None
    np.testing.assert_allclose(tick.command, [0.9] * 4)


def test_holding_the_button_does_not_toggle_again():
    d = drive()
    d.joy(pressed={"takeover"})
    for _ in range(5):
        assert d.tick().nu
    d.joy(pressed=())
    assert d.tick().nu                       # release: no edge in toggle mode


def test_takeover_press_while_waiting_for_a_r_decides_at_once():
    d = drive()
    d.joy(action=[0.0, 0.0, 1.0, 0.0])
    assert d.logic.on_observation(10, d.t) == []
    ticks = d.joy(pressed={"takeover"})
    assert len(ticks) == 1 and ticks[0].nu and ticks[0].stamp_ns == 10
    assert d.logic.on_action_robot(10, [0.0] * 4, d.t) == []        # too late: already decided
    assert d.logic.counts["late_a_r"] == 1


def test_observation_while_taken_over_decides_without_a_r():
    d = drive()
    d.press("takeover")
    [tick] = d.logic.on_observation(10, d.t)
    assert tick.nu and tick.stamp_ns == 10


def test_hold_mode_is_a_deadman():
    d = drive(mode="hold")
    d.joy(action=[1.0, 0.0, 0.0, 0.0], pressed={"takeover"})
    tick = d.tick()
    assert tick.nu and d.logic.state == TAKEN_OVER
    d.joy(pressed=())
    assert d.logic.state == AUTONOMOUS and not d.tick().nu


# --- joystick watchdog --------------------------------------------------------------------------
def test_joystick_silence_during_takeover_holds_until_explicit_press():
    d = drive()
    d.joy(action=[0.0, 1.0, 0.0, -0.6])
    d.press("takeover")
    assert d.tick().nu
    last_joy = d.t - 0.002
    ages, holds = [], []
    for _ in range(7):                                  # the controller is gone
        tick = d.tick(joy=False)
        ages.append(d.t - 0.002 - last_joy)
        holds.append(tick.hold)
    assert holds == [age > 0.25 for age in ages] and holds[-1]
    assert not tick.nu and d.logic.state == JOY_LOST
    assert "joystick lost" in tick.reason
    np.testing.assert_allclose(tick.command, [0.0, 0.0, 0.0, -0.6])     # gripper kept
    d.joy(action=[0.0, 1.0, 0.0, -0.6])                                 # reconnected
    for _ in range(3):                                                  # no control to policy
        tick = d.tick()
        assert tick.hold and d.logic.state == JOY_LOST
    d.press("takeover")
    tick = d.tick()
    assert tick.nu and d.logic.state == TAKEN_OVER
    assert d.logic.counts["joy_lost"] == 1


def test_watchdog_boundary_is_joy_timeout():
    d = drive()
    d.press("takeover")
    last_joy = d.t
    assert d.logic.on_observation(1, last_joy + 0.24)[0].nu
    [tick] = d.logic.on_observation(2, last_joy + 0.26)
    assert tick.hold and d.logic.state == JOY_LOST


def test_button_held_through_reconnection_is_not_a_press():
    d = drive(mode="hold")
    d.joy(pressed={"takeover"})
    assert d.tick().nu
    d.t += 0.3
    d.joy(pressed={"takeover"})                  # back, still held: not an explicit action
    assert d.logic.state == JOY_LOST and d.tick().hold
    d.joy(pressed=())
    assert d.logic.state == JOY_LOST
    d.joy(pressed={"takeover"})
    assert d.logic.state == TAKEN_OVER and d.tick().nu


def test_no_joystick_at_all_holds_the_policy_unless_disabled():
    d = Driver(make())
    tick = d.tick(joy=False)
    assert tick.hold and "no joystick" in tick.reason
    d = Driver(make(autonomy_requires_joy=False))
    assert not d.tick(joy=False).hold


# --- stale a_r ----------------------------------------------------------------------------------
def test_stale_a_r_holds_says_why_and_resumes():
    d = drive()
    assert not d.tick().hold
    tick = d.tick(a_r=None)
    assert tick.hold and "a_r stale" in tick.reason and d.logic.counts["stale_a_r"] == 1
    assert json.loads(d.logic.status_json(d.t))["reason"].startswith("a_r stale")
    assert d.logic.on_action_robot(d.stamp, [0.2] * 4, d.t) == []      # late a_r is dropped
    tick = d.tick(a_r=(0.2, 0.2, 0.2, 0.2))
    assert not tick.hold
    np.testing.assert_allclose(tick.command, [0.2] * 4)


def test_a_r_timeout_moves_the_deadline_and_a_slow_a_r_is_executed():
    """Lockstep sim: an a_r 0.2 s late is executed, not held (the default holds it)."""
    for timeout, held in ((0.0, True), (0.9, False)):
        d = drive(a_r_timeout_s=timeout)
        d.logic.on_observation(10**9, d.t)
        assert d.logic.deadline() == pytest.approx(d.t + (timeout or PERIOD))
        late = [] if held else d.logic.on_action_robot(10**9, [0.3] * 4, d.t + 0.2)
        ticks = late or d.logic.on_deadline(d.t + PERIOD)
        assert len(ticks) == 1 and ticks[0].hold == held, (timeout, ticks)
        if held:
            assert "one control period" in ticks[0].reason
        else:
            np.testing.assert_allclose(ticks[0].command, [0.3] * 4)
    d = drive(a_r_timeout_s=0.9)
    d.logic.on_observation(10**9, d.t)
    for _ in range(4):        # the person's controller keeps talking (no Joy watchdog)
        assert d.joy(dt=0.2) == []
    assert "a_r_timeout_s (0.9 s)" in d.logic.on_deadline(d.t + 0.1)[0].reason


def test_next_observation_holds_a_tick_that_never_got_a_r():
    d = drive()
    d.logic.on_observation(100, d.t)
    ticks = d.logic.on_observation(200, d.t + 0.01)
    assert [t.stamp_ns for t in ticks] == [100] and ticks[0].hold
    [tick] = d.logic.on_action_robot(200, [0.0] * 4, d.t + 0.02)
    assert tick.stamp_ns == 200 and not tick.hold


# --- e-stop -------------------------------------------------------------------------------------
def test_estop_latches_until_reset():
    d = drive()
    d.press("takeover")
    d.joy(action=[1.0, 0.0, 0.0, 0.3])
    d.tick()
    d.press("estop")
    for _ in range(3):
        tick = d.tick()
        assert tick.hold and tick.estop and not tick.nu and d.logic.state == ESTOP
        np.testing.assert_allclose(tick.command, [0.0, 0.0, 0.0, 0.3])
    d.press("takeover")
    assert d.logic.state == ESTOP
    d.joy(pressed={"estop", "reset"})                   # reset while e-stop is still held
    assert d.logic.state == ESTOP
    d.joy(pressed=())
    d.press("reset")
    assert d.logic.state == AUTONOMOUS
    tick = d.tick()
    assert not tick.hold and not tick.estop and d.logic.counts["estop"] == 1


def test_estop_held_when_joystick_reconnects_still_latches():
    d = drive()
    d.t += 1.0
    d.joy(pressed={"estop"})
    assert d.logic.state == ESTOP


# --- handback ramp ------------------------------------------------------------------------------
def test_handback_ramp_has_no_step_change():
    d = drive(handback_ramp_s=0.5)                       # 10 ticks at 20 Hz
    n = d.logic.cfg.ramp_ticks
    a_h, a_r = np.array([1.0, -1.0, 1.0, -1.0]), (-1.0, 1.0, -1.0, 1.0)
    d.joy(action=a_h)
    d.press("takeover")
    commands = [d.tick(a_r=a_r).command]
    d.press("takeover")
    ticks = [d.tick(a_r=a_r) for _ in range(n + 3)]
    commands += [t.command for t in ticks]
    steps = np.abs(np.diff(commands, axis=0)).max(axis=1)
    assert steps.max() <= 2.0 / n + 1e-9
    assert all(not t.nu and not t.hold for t in ticks)
    assert ticks[0].reason == f"ramp 1/{n}"
    np.testing.assert_allclose(ticks[n - 1].command, a_r)
    assert ticks[n].reason is None


def test_ramp_follows_a_moving_a_r_and_resumes_from_holds():
    rng = np.random.default_rng(0)
    d = drive(handback_ramp_s=0.25)
    n = d.logic.cfg.ramp_ticks
    d.joy(action=[0.8, 0.8, -0.8, 0.0])
    d.press("takeover")
    commands, a_rs = [d.tick().command], [np.zeros(4)]
    d.press("takeover")
    a_r = np.zeros(4)
    for _ in range(12):
        a_r = np.clip(a_r + rng.uniform(-0.05, 0.05, 4), -1, 1)
        commands.append(d.tick(a_r=a_r).command)
        a_rs.append(a_r)
    steps = np.abs(np.diff(commands, axis=0)).max(axis=1)
    assert steps.max() <= 2.0 / n + 0.05 + 1e-9
    hold = d.tick(a_r=None)                              # a stall: hold, then ramp back
    assert hold.hold
    resumed = d.tick(a_r=a_r)
    step = np.abs(resumed.command - hold.command).max()
    assert step <= np.abs(a_r - hold.command).max() / n + 1e-9


# --- bad values ---------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_a_r_never_passes(bad):
    d = drive()
    tick = d.tick(a_r=(0.1, bad, 0.1, 0.1))
    assert tick.hold and "nonfinite" in tick.reason and np.all(np.isfinite(tick.command))
    assert d.logic.counts["nonfinite_a_r"] == 1
    tick = d.tick(a_r=(0.1, 0.2, 0.3))                   # wrong length
    assert tick.hold and d.logic.counts["malformed_a_r"] == 1


def test_non_finite_or_huge_sticks_while_taken_over():
    d = drive()
    d.press("takeover")
    axes = [0.0] * 6
    axes[1] = math.nan
    d.logic.on_joy(axes, [0] * 17, d.t)
    tick = d.tick(joy=False)
    assert tick.hold and "nonfinite" in tick.reason and d.logic.counts["nonfinite_joy"] == 1
    axes[1] = -1e30
    d.logic.on_joy(axes, [0] * 17, d.t)
    tick = d.tick(joy=False)
    assert tick.nu and tick.command[0] == 1.0 and d.logic.counts["clamped_joy"] == 1
    d.logic.on_joy([0.0], [0] * 3, d.t)                  # too short for the axis map
    tick = d.tick(joy=False)
    assert tick.hold and d.logic.counts["malformed_joy"] == 1


# --- episodes -----------------------------------------------------------------------------------
def test_episode_buttons_publish_events_only_when_enabled():
    d = drive()
    d.press("episode_start")
    assert d.logic.pop_events() == [] and not d.tick().hold
    d = drive(episode_buttons=True)
    tick = d.tick()
    assert tick.hold and "no episode" in tick.reason
    d.press("episode_start")
    d.press("episode_start")                             # already running: ignored
    assert not d.tick().hold
    d.press("episode_failure")
    d.press("episode_start")
    d.tick()
    d.press("episode_success")
    events = [parse_episode_event(e) for e in d.logic.pop_events()]
    assert [(e["event"], e["episode"], e.get("success")) for e in events] == [
        ("start", 0, None), ("end", 0, False), ("start", 1, None), ("end", 1, True)]
    assert events[3]["stamp_ns"] == d.stamp and d.tick().hold


# --- simulated person in lock-step --------------------------------------------------------------
def test_joy_sync_waits_for_the_persons_joy_of_this_tick():
    d = drive(joy_sync=True)
    d.stamp = 500
    assert d.logic.on_observation(500, d.t) == []
    assert d.logic.on_action_robot(500, [0.1] * 4, d.t) == []         # waits for Joy(500)
    [tick] = d.joy(action=[0.0, 0.0, 0.7, 0.0], pressed={"takeover"})
    assert tick.nu and tick.stamp_ns == 500
    np.testing.assert_allclose(tick.a_h, [0.0, 0.0, 0.7, 0.0])


def test_status_never_shows_a_r():
    d = drive()
    d.tick(a_r=(0.123456, -0.654321, 0.111111, 0.999999))
    text = d.logic.status_json(d.t)
    for v in ("0.123456", "0.654321", "0.111111", "0.999999"):
        assert v not in text


# --- fuzz ---------------------------------------------------------------------------------------
def _random_values(rng, n):
    pool = [math.nan, math.inf, -math.inf, 1e300, -1e300, 2.5, -7.0, 0.0, 1.0, -1.0]
    return [float(rng.choice(pool)) if rng.random() < 0.3 else float(rng.uniform(-1.5, 1.5))
            for _ in range(n)]


@pytest.mark.parametrize("mode", ["toggle", "hold"])
def test_fuzz_random_joy_never_yields_an_unsafe_command(mode):
    rng = np.random.default_rng(1234 if mode == "toggle" else 4321)
    logic = make(mode=mode, handback_ramp_s=0.3, episode_buttons=bool(rng.integers(2)))
    t, stamp, ticks, states = 0.0, 0, [], set()
    for _ in range(6000):
        t += float(rng.choice([0.001, 0.01, 0.05, 0.3]))
        r = rng.random()
        if r < 0.5:
            axes = _random_values(rng, int(rng.integers(0, 9)))
            buttons = list(rng.integers(-2, 3, int(rng.integers(0, 20))))
            if rng.random() < 0.05:
                axes, buttons = ["x", None], [None, "y"]
            ticks += logic.on_joy(axes, buttons, t, stamp_ns=int(rng.integers(0, stamp + 2)))
        elif r < 0.75:
            stamp += int(rng.integers(0, 3)) * 50_000_000
            ticks += logic.on_observation(stamp, t)
        elif r < 0.95:
            values = None if rng.random() < 0.05 else _random_values(rng, int(rng.integers(3, 6)))
            ticks += logic.on_action_robot(stamp - int(rng.integers(0, 2)) * 50_000_000, values, t)
        else:
            ticks += logic.on_deadline(t)
        states.add(logic.state)
    assert len(ticks) > 500 and {AUTONOMOUS, TAKEN_OVER, JOY_LOST, ESTOP} <= states
    stamps = [tk.stamp_ns for tk in ticks]
    assert stamps == sorted(set(stamps))                 # one decision per tick, in order
    for tk in ticks:
        assert tk.command.shape == (4,) and np.all(np.isfinite(tk.command))
        assert np.all(np.abs(tk.command) <= 1.0)
        assert (tk.a_h is not None) == tk.nu and not (tk.nu and tk.hold)
        if tk.hold:
            assert np.all(tk.command[:3] == 0.0)
        if tk.estop or tk.state == JOY_LOST:
            assert tk.hold
    json.dumps(logic.status(t))
