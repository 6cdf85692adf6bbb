"""The takeover arbiter's state machine: pure Python, no ROS, every input timed by the caller.

States
    autonomous  the policy drives: executed = a_r(t) (nu=0), blended from the previous command over
                `handback_ramp_s` whenever control has just come back to the policy
    taken_over  the person drives: executed = a_h(t) from the sticks (nu=1)
    joy_lost    Joy went silent for `joy_timeout_s` while taken over: hold; leaves only on an
                explicit takeover press received after the Joy stream is back (-> taken_over)
    estop       the e-stop button latched: hold; reset (with e-stop released) -> autonomous

Transitions (buttons act on their rising edge, except e-stop, which acts on its level)
    autonomous --takeover press--> taken_over
    taken_over --takeover press (toggle) / release (hold mode)--> autonomous (ramp)
    taken_over --no Joy for joy_timeout_s--> joy_lost --Joy back, then takeover press--> taken_over
    any --e-stop pressed--> estop --reset press, e-stop released--> autonomous (ramp)

Besides the states, single ticks hold (zero motion, `hold_keep` dimensions such as the gripper kept
at their last commanded value) when a_r(t) has not come within one control period of
observation(t) ("a_r stale"; `a_r_timeout_s` > 0 waits that long instead, for the lockstep
simulation), when a_r or a_h is malformed or not finite, when no Joy has been
heard at all (`autonomy_requires_joy`), or, when the arbiter owns episodes, between episodes.
Hold ticks have nu=0 and hold=1: a_h is published exactly when nu=1.

Joy convention: raw SDL/pygame axes (stick up and stick left are negative), as the joystick node
publishes them; a_h[d] = clamp(axis_sign[d] * deadzone(axes[axis[d]])).  `JoyMap.joy_for()` is the
inverse, for a simulated person that acts through Joy.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from mile_ros.interfaces import episode_event
from mile_ros.params import ConfigError

MODES = ("toggle", "hold")
ROLES = ("takeover", "estop", "reset", "episode_start", "episode_success", "episode_failure")
AUTONOMOUS, TAKEN_OVER, JOY_LOST, ESTOP = "autonomous", "taken_over", "joy_lost", "estop"
COUNTERS = ("nonfinite_a_r", "clamped_a_r", "malformed_a_r", "nonfinite_joy", "clamped_joy",
            "malformed_joy", "stale_a_r", "late_a_r", "joy_lost", "estop")


def apply_deadzone(value: float, deadzone: float) -> float:
    """Zero inside the deadzone, rescaled outside it so the output still reaches +-1."""
    magnitude = abs(value)
    if magnitude <= deadzone:
        return 0.0
    return math.copysign((magnitude - deadzone) / (1.0 - deadzone), value)


@dataclass(frozen=True)
class ArbiterConfig:
    action_names: tuple[str, ...]
    axes: tuple[int, ...]
    axis_sign: tuple[float, ...]
    buttons: dict                       # role -> button index
    mode: str = "toggle"
    deadzone: float = 0.0
    joy_timeout_s: float = 0.25
    handback_ramp_s: float = 0.5
    control_rate_hz: float = 20.0
    hold_keep: tuple[bool, ...] = ()    # per action dimension: keep the last value while holding
    episode_buttons: bool = False
    joy_sync: bool = False
    autonomy_requires_joy: bool = True
    a_r_timeout_s: float = 0.0          # hold a tick whose a_r is this late (0: one period)

    @property
    def period_s(self) -> float:
        return 1.0 / self.control_rate_hz

    @property
    def a_r_wait_s(self) -> float:
        """Return how long a tick waits for a_r before it holds (one control period unless set)."""
        return self.a_r_timeout_s or self.period_s

    @property
    def ramp_ticks(self) -> int:
        return max(0, int(round(self.handback_ramp_s * self.control_rate_hz)))

    @classmethod
    def from_params(cls, p: dict[str, Any]) -> "ArbiterConfig":
        """Build from the arbiter's flat parameter dict; every problem names its parameter."""
        def fail(name, msg):
            raise ConfigError(f"arbiter parameter '{name}': {msg}")

        names = tuple(p["action_names"])
        if not names or len(set(names)) != len(names):
            fail("action_names", f"must be distinct, non-empty names, got {list(names)}")
        if p["mode"] not in MODES:
            fail("mode", f"must be one of {MODES}, got {p['mode']!r}")
        layout = list(p["button_layout"])
        if len(set(layout)) != len(layout):
            fail("button_layout", "button names must be distinct")
        buttons, used = {}, {}
        for role in ROLES:
            key = f"buttons.{role}"
            if key not in p:
                fail(key, "missing")
            name = p[key]
            if name not in layout:
                fail(key, f"unknown button name {name!r}; button_layout has {layout}")
            if name in used:
                fail(key, f"button {name!r} is already used by buttons.{used[name]}")
            used[name] = role
            buttons[role] = layout.index(name)
        axis_count = int(p["axis_count"])
        if axis_count < 1:
            fail("axis_count", f"must be >= 1, got {axis_count}")
        axes = []
        for name in names:
            key = f"axes.{name}"
            if key not in p:
                fail(key, f"no stick axis is mapped to action dimension {name!r}")
            index = p[key]
            if (isinstance(index, bool) or not isinstance(index, int)
                    or not 0 <= index < axis_count):
                fail(key, f"axis index must be an int in [0, {axis_count - 1}] "
                          f"(axis_count={axis_count}), got {index!r}")
            axes.append(index)
        signs = [float(s) for s in p["axis_sign"]]
        if len(signs) != len(names):
            fail("axis_sign", f"needs one value per action dimension ({len(names)}), "
                              f"got {len(signs)}")
        if not all(math.isfinite(s) and s != 0.0 and abs(s) <= 1.0 for s in signs):
            fail("axis_sign", f"values must be finite, non-zero and within [-1, 1], got {signs}")
        keep = list(p["hold_keep"])
        unknown = [k for k in keep if k not in names]
        if unknown:
            fail("hold_keep", f"{unknown} are not action dimensions {list(names)}")
        deadzone = float(p["deadzone"])
        if not 0.0 <= deadzone < 1.0:
            fail("deadzone", f"must be in [0, 1), got {deadzone}")
        for key in ("joy_timeout_s", "control_rate_hz"):
            if not float(p[key]) > 0.0:
                fail(key, f"must be > 0, got {p[key]}")
        for key in ("handback_ramp_s", "a_r_timeout_s"):
            if not float(p[key]) >= 0.0:
                fail(key, f"must be >= 0, got {p[key]}")
        return cls(action_names=names, axes=tuple(axes), axis_sign=tuple(signs), buttons=buttons,
                   mode=p["mode"], deadzone=deadzone, joy_timeout_s=float(p["joy_timeout_s"]),
                   handback_ramp_s=float(p["handback_ramp_s"]),
                   control_rate_hz=float(p["control_rate_hz"]),
                   hold_keep=tuple(n in keep for n in names),
                   episode_buttons=bool(p["episode_buttons"]), joy_sync=bool(p["joy_sync"]),
                   autonomy_requires_joy=bool(p["autonomy_requires_joy"]),
                   a_r_timeout_s=float(p["a_r_timeout_s"]))


class JoyMap:
    """Joy axes/buttons -> (a_h, pressed roles), and back (for a simulated person)."""

    def __init__(self, cfg: ArbiterConfig):
        self.cfg = cfg
        self.axes = np.asarray(cfg.axes)
        self.sign = np.asarray(cfg.axis_sign, dtype=np.float64)

    def action(self, axes: Sequence[float]) -> tuple[np.ndarray | None, str | None]:
        """(a_h clamped to [-1, 1], None) or (None, problem) for a short or non-finite message."""
        if len(axes) <= int(self.axes.max()):
            return None, "malformed"
        try:
            raw = np.asarray([axes[i] for i in self.cfg.axes], dtype=np.float64)
        except (TypeError, ValueError):
            return None, "malformed"
        if not np.all(np.isfinite(raw)):
            return None, "nonfinite"
        problem = "clamped" if np.any(np.abs(raw) > 1.0) else None
        raw = np.clip(raw, -1.0, 1.0)
        dz = self.cfg.deadzone
        a = self.sign * np.array([apply_deadzone(v, dz) for v in raw]) if dz else self.sign * raw
        return np.clip(a, -1.0, 1.0), problem

    def pressed(self, buttons: Sequence[int]) -> dict[str, bool]:
        """Role -> pressed; a button the message does not carry reads as released."""
        out = {}
        for role, index in self.cfg.buttons.items():
            try:
                out[role] = index < len(buttons) and float(buttons[index]) > 0.5  # NaN: released
            except (TypeError, ValueError):
                out[role] = False
        return out

    def joy_for(self, action: Sequence[float] | None = None, pressed: Sequence[str] = (),
                n_axes: int | None = None, n_buttons: int | None = None,
                ) -> tuple[list[float], list[int]]:
        """Joy (axes, buttons) that this map reads back as `action` with `pressed` roles held."""
        n_axes = max(n_axes or 0, int(self.axes.max()) + 1)
        n_buttons = max(n_buttons or 0, max(self.cfg.buttons.values()) + 1)
        axes = [0.0] * n_axes
        if action is not None:
            dz = self.cfg.deadzone
            for d, (index, sign) in enumerate(zip(self.cfg.axes, self.cfg.axis_sign)):
                v = float(np.clip(action[d], -1.0, 1.0)) / sign
                axes[index] = float(np.clip(math.copysign(dz + abs(v) * (1 - dz), v) if v else 0.0,
                                            -1.0, 1.0))
        buttons = [0] * n_buttons
        for role in pressed:
            buttons[self.cfg.buttons[role]] = 1
        return axes, buttons


@dataclass
class Tick:
    """The arbiter's decision for one control tick (stamp = the observation's stamp)."""

    stamp_ns: int
    command: np.ndarray
    nu: bool
    hold: bool
    estop: bool
    a_h: np.ndarray | None      # set exactly when nu
    state: str
    reason: str | None = None   # why it holds, or "ramp k/N"

    @property
    def flags(self) -> tuple[float, float, float]:
        return float(self.nu), float(self.hold), float(self.estop)


@dataclass
class _Pending:
    stamp_ns: int
    since: float                # monotonic arrival of the observation
    joy_seen: bool = False      # a Joy stamped >= the observation arrived (joy_sync)


@dataclass
class ArbiterLogic:
    cfg: ArbiterConfig
    state: str = AUTONOMOUS
    counts: dict = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    events: list = field(default_factory=list)    # episode event JSON strings to publish

    def __post_init__(self):
        self.map = JoyMap(self.cfg)
        n = len(self.cfg.action_names)
        self.keep = np.asarray(self.cfg.hold_keep or (False,) * n, dtype=bool)
        self.last_command = np.zeros(n)
        self.last_source = "hold"          # control starts from rest: the first policy tick ramps
        self.ramp_from: np.ndarray | None = None
        self.ramp_k = 0
        self.pending: _Pending | None = None
        self.a_r: tuple | None = None      # the newest a_r: (stamp, values or None, problem)
        self.decided_stamp: int | None = None
        self.last_joy_time: float | None = None
        self.joy_stamp_ns: int | None = None
        self.prev_pressed: dict | None = None
        self.a_h: np.ndarray | None = None
        self.a_h_problem: str | None = "no Joy yet"
        self.episode_running = False
        self.episode_index = 0
        self.last_reason: str | None = None

    # --- inputs ----------------------------------------------------------------------------------
    def on_joy(self, axes: Sequence[float], buttons: Sequence[int], now: float,
               stamp_ns: int | None = None) -> list[Tick]:
        self.check_watchdog(now)
        self.last_joy_time = now
        self.joy_stamp_ns = stamp_ns
        try:
            self.a_h, problem = self.map.action(axes)
        except Exception:  # noqa: BLE001 - any garbage in a Joy message is a malformed message
            self.a_h, problem = None, "malformed"
        if problem:
            self.counts[f"{problem}_joy"] += 1
        self.a_h_problem = None if self.a_h is not None else f"joystick values {problem}"
        pressed = self.map.pressed(buttons)
        if pressed["estop"] and self.state != ESTOP:
            self._enter(ESTOP)
            self.counts["estop"] += 1
        if self.prev_pressed is not None:   # the first message after (re)connection sets no edges
            edge = {r: p and not self.prev_pressed[r] for r, p in pressed.items()}
            self._buttons(edge, pressed, stamp_ns)
        self.prev_pressed = pressed
        if self.pending and stamp_ns is not None and stamp_ns >= self.pending.stamp_ns:
            self.pending.joy_seen = True
        return self._resolve(now)

    def on_observation(self, stamp_ns: int, now: float) -> list[Tick]:
        ticks = []
        if self.pending is not None and self.pending.stamp_ns == stamp_ns:
            return ticks                        # duplicate of the observation being decided
        if self.pending is not None:            # the previous tick never got its a_r: hold it
            ticks += self._resolve(now, deadline=True)
        if self.decided_stamp is not None and stamp_ns <= self.decided_stamp:
            return ticks                        # duplicate or out-of-order observation
        self.check_watchdog(now)
        self.pending = _Pending(stamp_ns, now,
                                joy_seen=self.joy_stamp_ns is not None
                                and self.joy_stamp_ns >= stamp_ns)
        return ticks + self._resolve(now)

    def on_action_robot(self, stamp_ns: int, values: Sequence[float] | None, now: float,
                        ) -> list[Tick]:
        """a_r(stamp); `values` None means the message could not be read as the action vector."""
        if self.decided_stamp is not None and stamp_ns <= self.decided_stamp:
            self.counts["late_a_r"] += 1
            return []
        a, problem = None, None
        if values is None or len(values) != len(self.cfg.action_names):
            problem = "malformed"
        else:
            a = np.asarray(values, dtype=np.float64)
            if not np.all(np.isfinite(a)):
                a, problem = None, "nonfinite"
            elif np.any(np.abs(a) > 1.0):
                a, problem = np.clip(a, -1.0, 1.0), "clamped"
        if problem:
            self.counts[f"{problem}_a_r"] += 1
        self.a_r = (stamp_ns, a, problem)
        return self._resolve(now)

    def on_deadline(self, now: float) -> list[Tick]:
        """Handle the deadline of an undecided observation.

        Called `a_r_wait_s` (one control period unless set) after an observation that is still
        undecided.
        """
        self.check_watchdog(now)
        if self.pending is None:
            return []
        return self._resolve(now, deadline=True)

    def deadline(self) -> float | None:
        return None if self.pending is None else self.pending.since + self.cfg.a_r_wait_s

    def check_watchdog(self, now: float) -> bool:
        """Joy silent for joy_timeout_s: forget the buttons; while taken over, go to joy_lost."""
        if self.last_joy_time is None or now - self.last_joy_time <= self.cfg.joy_timeout_s:
            return False
        if self.prev_pressed is None:
            return False
        self.prev_pressed = None
        self.a_h, self.a_h_problem = None, "no Joy"
        if self.state == TAKEN_OVER:
            self._enter(JOY_LOST)
            self.counts["joy_lost"] += 1
        return True

    def joy_alive(self, now: float) -> bool:
        return (self.last_joy_time is not None
                and now - self.last_joy_time <= self.cfg.joy_timeout_s)

    # --- transitions -----------------------------------------------------------------------------
    def _enter(self, state: str) -> None:
        self.state = state

    def _buttons(self, edge: dict, level: dict, stamp_ns: int | None) -> None:
        if self.state == ESTOP:
            if edge["reset"] and not level["estop"]:
                self._enter(AUTONOMOUS)
        elif edge["takeover"]:
            if self.state in (AUTONOMOUS, JOY_LOST):
                self._enter(TAKEN_OVER)
            elif self.cfg.mode == "toggle":
                self._enter(AUTONOMOUS)
        elif self.state == TAKEN_OVER and self.cfg.mode == "hold" and not level["takeover"]:
            self._enter(AUTONOMOUS)
        if self.cfg.episode_buttons:
            self._episode_buttons(edge, stamp_ns)

    def _episode_buttons(self, edge: dict, stamp_ns: int | None) -> None:
        stamp = self.pending.stamp_ns if self.pending else (self.decided_stamp or stamp_ns or 0)
        if edge["episode_start"] and not self.episode_running:
            self.episode_running = True
            self.events.append(episode_event("start", self.episode_index, stamp, source="arbiter"))
        elif (edge["episode_success"] or edge["episode_failure"]) and self.episode_running:
            success = bool(edge["episode_success"])
            self.events.append(episode_event("end", self.episode_index, stamp, success=success,
                                             reason="button", source="arbiter"))
            self.episode_running = False
            self.episode_index += 1

    # --- deciding a tick -------------------------------------------------------------------------
    def _resolve(self, now: float, deadline: bool = False) -> list[Tick]:
        p = self.pending
        if p is None:
            return []
        waiting_for_joy = self.cfg.joy_sync and not p.joy_seen and not deadline
        if self.state == ESTOP:
            return [self._hold(p, "e-stop latched: press reset")]
        if self.state == JOY_LOST:
            return [self._hold(p, "joystick lost during takeover: press takeover to resume")]
        if self.state == TAKEN_OVER:
            if waiting_for_joy:
                return []
            if not self.joy_alive(now) or self.a_h is None:
                return [self._hold(p, self.a_h_problem or "no Joy")]
            return [self._decide(p, self.a_h.copy(), nu=True)]
        # autonomous
        if self.cfg.autonomy_requires_joy and not self.joy_alive(now):
            return [self._hold(p, "no joystick: the person cannot intervene")]
        if self.cfg.episode_buttons and not self.episode_running:
            return [self._hold(p, "no episode running: press episode_start")]
        if waiting_for_joy:
            return []
        a_r = self.a_r if self.a_r is not None and self.a_r[0] == p.stamp_ns else None
        if a_r is None:
            if not deadline:
                return []
            self.counts["stale_a_r"] += 1
            return [self._hold(p, f"a_r stale: no policy action within {self._wait_text()}")]
        if a_r[1] is None:
            return [self._hold(p, f"a_r {a_r[2]}")]
        return [self._policy(p, a_r[1])]

    def _wait_text(self) -> str:
        t = self.cfg.a_r_timeout_s
        return f"a_r_timeout_s ({t:g} s)" if t else "one control period"

    def _policy(self, p: _Pending, a_r: np.ndarray) -> Tick:
        n = self.cfg.ramp_ticks
        if self.last_source != "policy" and n > 0:
            self.ramp_from, self.ramp_k = self.last_command.copy(), 0
        reason = None
        if self.ramp_from is not None:
            self.ramp_k += 1
            w = self.ramp_k / n
            command = self.ramp_from + w * (a_r - self.ramp_from)
            reason = f"ramp {self.ramp_k}/{n}"
            if self.ramp_k >= n:
                self.ramp_from = None
        else:
            command = a_r
        return self._decide(p, command, nu=False, source="policy", reason=reason)

    def _hold(self, p: _Pending, reason: str) -> Tick:
        command = np.where(self.keep, self.last_command, 0.0)
        return self._decide(p, command, nu=False, source="hold", reason=reason)

    def _decide(self, p: _Pending, command: np.ndarray, nu: bool, source: str = "human",
                reason: str | None = None) -> Tick:
        command = np.clip(np.nan_to_num(command, nan=0.0, posinf=0.0, neginf=0.0), -1.0, 1.0)
        if source != "policy":
            self.ramp_from = None
        self.last_command, self.last_source = command, source
        self.pending, self.decided_stamp, self.last_reason = None, p.stamp_ns, reason
        return Tick(p.stamp_ns, command.copy(), nu=nu, hold=source == "hold",
                    estop=self.state == ESTOP, a_h=command.copy() if nu else None,
                    state=self.state, reason=reason)

    # --- reporting (never shows a_r: the person must not see it) ---------------------------------
    def status(self, now: float | None = None) -> dict:
        return {"state": self.state, "mode": self.cfg.mode,
                "hold": self.decided_stamp is not None and self.last_source == "hold",
                "reason": self.last_reason,
                "joystick": None if now is None else self.joy_alive(now),
                "episode_running": self.episode_running if self.cfg.episode_buttons else None,
                "counts": dict(self.counts)}

    def status_json(self, now: float | None = None) -> str:
        return json.dumps(self.status(now))

    def pop_events(self) -> list[str]:
        events, self.events = self.events, []
        return events
