"""The simulated person's hands on the controller (ROS-free).

The person built for the simulated WidowX, and `JoyPlayer`, which turns its per-tick decisions
into the Joy messages a person pressing the takeover button and moving the sticks would produce.
"""
from __future__ import annotations

from pathlib import Path

# The person's belief pihat about the robot: "initial" (the paper's Section V: BC on rollouts of
# the initial policy, fixed) | "policy" (the policy the robot runs now, `mental_checkpoint`).
from mile_ros.params import MENTAL_MODELS, ConfigError

TASK = "widowx"


STYLES = ("segments", "paper")


def person_style(p: dict) -> dict:
    """Return the InitialConfig fields of the person's style for the sim_human parameters `p`.

    Times are in seconds and become ticks at the control rate: `reaction_s` from the hazard
    firing to the takeover, `dwell_s` the shortest takeover and the calm time before handing
    back (at least one tick), `stall_s` how long the robot holds still (every state value within
    `stall_tol`) before the person takes over for that alone (0: never). Raises ValueError
    naming the parameter.
    """
    if p["style"] not in STYLES:
        raise ValueError(f"sim_human parameter 'style' must be one of {', '.join(STYLES)}, "
                         f"got {p['style']!r}")
    checks = {"reaction_s": p["reaction_s"] >= 0, "dwell_s": p["dwell_s"] > 0,
              "handback_p": 0 < p["handback_p"] < 1, "control_rate_hz": p["control_rate_hz"] > 0,
              "stall_s": p["stall_s"] >= 0, "stall_tol": p["stall_tol"] > 0}
    for name, ok in checks.items():
        if not ok:
            raise ValueError(f"sim_human parameter '{name}' is out of range: {p[name]} "
                             "(reaction_s >= 0, dwell_s > 0, 0 < handback_p < 1, rate > 0, "
                             "stall_s >= 0, stall_tol > 0)")
    rate = p["control_rate_hz"]
    stall = max(1, round(p["stall_s"] * rate)) if p["stall_s"] > 0 else 0
    return {"person": p["style"], "reaction_ticks": round(p["reaction_s"] * rate),
            "dwell_ticks": max(1, round(p["dwell_s"] * rate)), "handback_p": p["handback_p"],
            "stall_ticks": stall, "stall_tol": p["stall_tol"]}


def check_mental_model(p: dict) -> None:
    """Check the sim_human parameters `mental_model` and `mental_checkpoint`.

    Raises ConfigError (a ValueError) naming the parameter.
    """
    if p["mental_model"] not in MENTAL_MODELS:
        raise ConfigError(f"sim_human parameter 'mental_model' must be one of "
                         f"{', '.join(MENTAL_MODELS)}, got {p['mental_model']!r}")
    path = p["mental_checkpoint"]
    if p["mental_model"] == "policy" and path and not Path(path).is_dir():
        raise ConfigError(f"sim_human parameter 'mental_checkpoint': no checkpoint directory "
                         f"at {path}")


def load_belief(path: str, state_names: list[str], frame_stack: int):
    """Return the checkpoint at `path` (a directory, or a root with `latest`) as a MileModel.

    It must read the task's state vector with the person's frame stack and no image. Raises
    ConfigError (a ValueError) naming the parameter `mental_checkpoint`.
    """
    from mile_ros.learning.checkpoint import load_checkpoint
    from mile_ros.learning.specs import ObsSpec

    try:
        return load_checkpoint(path, expect_obs_spec=ObsSpec(state_names, frame_stack))
    except ValueError as e:
        raise ConfigError(f"sim_human parameter 'mental_checkpoint': {e}") from None


def apply_mental_model(person, info: dict, p: dict, initial, state_names, frame_stack: int):
    """Give `person` the belief `p["mental_model"]` asks for; returns info with it named.

    "policy": the checkpoint `mental_checkpoint` ("" = the initial policy `initial`) as the
    robot runs it (ExecutedPolicy); the cost c stays as calibrated on the initial policy.
    """
    from mile_ros.sim.person import ExecutedPolicy

    if p["mental_model"] != "policy":
        return info | {"mental_model": "initial (BC on rollouts of the initial policy)"}
    path = p["mental_checkpoint"]
    model = load_belief(path, state_names, frame_stack) if path else initial
    person.mental_model = ExecutedPolicy(model)
    name = getattr(model, "checkpoint_id", None) if path else "initial policy"
    return info | {"mental_model": f"policy {name or path}"}


def build_person(p: dict):
    """(SimulatedPerson, info, task state names, frame_stack) for the sim_human parameters `p`.

    The WidowX task's initial policy and the person calibrated on it (both cached per seed),
    of the style `p["style"]` (see person_style), with the belief `p["mental_model"]`
    (apply_mental_model).
    """
    from mile_ros.sim.initial import InitialConfig, build_initial_policy
    from mile_ros.sim.initial import build_person as calibrated_person
    from mile_ros.sim.tasks import TaskOptions, make_task

    style = person_style(p)
    check_mental_model(p)
    episodes = calibration_episodes(p)
    options = TaskOptions(expert_sigma=p["expert_sigma"])
    task = make_task(TASK, seed=p["seed"], options=options)
    try:
        initial, _ = build_initial_policy(TASK, p["seed"], InitialConfig(), task=task)
        cfg = InitialConfig(target_rate=p["target_rate"], beta=p["beta"],
                            c=None if p["c"] < 0 else p["c"], task=options,
                            closed_loop_episodes=episodes, **style)
        person, info = calibrated_person(TASK, p["seed"], initial, cfg, task=task)
        names = list(task.state_names)
    finally:
        task.close()
    info = apply_mental_model(person, info, p, initial, names, cfg.frame_stack)
    person.reseed(p["seed"])
    return person, info, names, cfg.frame_stack


def calibration_episodes(p: dict) -> int:
    """Return the sim_human parameter 'calibration_episodes' (an integer >= 0), or raise.

    Closed-loop episodes per step of c's calibration (`initial.build_person`). A person of the
    segments style takes an episode over nearly whole or not at all, so the rate of a few episodes
    is noisy: seed 1's person, calibrated to 26.8% on 5 episodes, intervened on 57.9% and 63.8% of
    the ticks of 20 (two seed streams); the demo's first iteration on 83.8%.
    """
    n = p["calibration_episodes"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"sim_human parameter 'calibration_episodes' must be an integer >= 0, "
                         f"got {n!r}")
    return n


class JoyPlayer:
    """The hands on the controller.

    Turns decisions into Joy messages (axes, buttons) the way a person presses buttons, one
    decision per tick. ROS-free.
    """

    def __init__(self, joy_map, mode: str, n_axes: int, n_buttons: int):
        self.map, self.mode = joy_map, mode
        self.n_axes, self.n_buttons = n_axes, n_buttons
        self.taken_over = False        # what the person believes the arbiter is in
        self.button_down = False       # the takeover button's level in the last Joy sent

    def _joy(self, action, press: bool):
        self.button_down = press
        return self.map.joy_for(action, ("takeover",) if press else (), self.n_axes,
                                self.n_buttons)

    def tick(self, nu: bool, a_h) -> list[tuple[list[float], list[int]]]:
        """Joy messages (in order) for this tick's decision; the last one is the tick's state."""
        out = []
        if self.mode == "hold":
            self.taken_over = nu
            return [self._joy(a_h if nu else None, press=nu)]
        if nu != self.taken_over:                 # toggle: a press starts or ends a takeover
            if self.button_down:                  # let go first, or there is no new edge
                out.append(self._joy(None, press=False))
            self.taken_over = nu
            out.append(self._joy(a_h if nu else None, press=True))
        else:
            out.append(self._joy(a_h if nu else None, press=False))
        return out

    def idle(self):
        """Return the controller at rest.

        Sticks centred, nothing pressed unless holding a takeover.
        """
        return self.map.joy_for(None, ("takeover",) if self.button_down else (),
                                self.n_axes, self.n_buttons)
