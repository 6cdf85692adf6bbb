"""The initial policy and the simulated person of a (task, training seed).

Built by the benchmark itself, deterministic per seed and cached on disk. Both are MileModels
trained by `mile_ros.learning.train_bc` -- the networks and training loop the robot's trainer
uses -- so every method of the benchmark starts from the same kind of model the robot runs.

- Initial policy: BC on a few noisy expert demonstrations (continuous: Gaussian noise on the
  executed action, std DEMO_NOISE for the task; discrete: epsilon-random executed action; labels
  are the executed actions), so it is mediocre. BC runs the trainer's loop with held-out early
  stopping, or a fixed number of updates where BC_UPDATES names the task (the WidowX: early
  stopping ended its BC after a few hundred updates, and that policy succeeded on 0/20). The
  aim is 10-50% success, checked on episodes of its own (seed stream 98, never the evaluation
  seeds); outside the band the builder retries (fewer demonstrations, or
  more noise, when it is too good; more demonstrations when too poor), at most `band_tries`
  builds, keeps the one closest to the band and records every try in its info.
  Its demonstrations are not training data for any method (the paper's Figs. 3-4).
- Person: the mental model is BC on deterministic rollouts of the initial policy (without a
  person); c is first calibrated so that the mean intervention probability over those rollouts'
  states equals the target rate, then refined in closed loop (interventions steer the robot to
  states where fewer are needed, so the open-loop c undershoots) on a few separate episodes.
  The person's probit scale grows with c (beta = max(beta, beta_ratio * c), see
  sim/person.py), so it is not a hard threshold. `person="segments"` (default): the person takes
  over on that hazard and keeps control until the state is safe again (SegmentPerson);
  "paper": it decides afresh every tick, the paper's Section V person. Both rates are reported,
  and the closed-loop success of collection with the person beside the initial policy's own.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from dataclasses import replace as dataclass_replace
from pathlib import Path

import numpy as np

from mile_ros.learning import ActionSpec, MileConfig, ObsSpec, train_bc
from mile_ros.learning.checkpoint import load_checkpoint, save_checkpoint
from mile_ros.learning.specs import FRAME_STACK, FrameStacker, stack_frames
from mile_ros.sim.person import (
    ProbitStats,
    SegmentPerson,
    SimulatedPerson,
    calibrate_c,
    calibrate_c_closed_loop,
    person_scale,
)
from mile_ros.sim.tasks import TaskOptions, evaluate_policy, make_task

# Per-task starting points chosen so the initial policy is mediocre (10-50% success); any task
# not listed uses DEFAULT_DEMOS_OTHER. The band check adjusts from there.
DEFAULT_DEMOS = {"lunarlander": 6, "metaworld/drawer-open": 1, "metaworld/button-press": 1,
                 "metaworld/peg-insert-side": 6, "widowx": 3}
DEFAULT_DEMOS_OTHER = 3
# Executed-action noise of the demonstrations (continuous tasks), per task; 0.3 otherwise (the
# WidowX expert moves at 0.5 at most), and BC updates without held-out early stopping, per task
# (other tasks: the trainer's early stopping). WidowX, BC on 3 demonstrations, training seeds 0
# and 1, 20 episodes each (bench/bench_widowx_bc.py, bench/results/widowx_bc.json): noise 0.3 and
# early stopping 0/20 and 1/20; noise 0.1 and early stopping 0/20 and 0/20; noise 0.1 and 3000
# updates 4/20 and 2/20 (the initial policy's aim is 10-50%).
DEMO_NOISE = {"widowx": 0.1}
DEMO_NOISE_OTHER = 0.3
BC_UPDATES = {"widowx": 3000}
BAND = (0.10, 0.50)     # the initial policy's aimed success


@dataclass
class InitialConfig:
    n_demos: int | None = None         # None: DEFAULT_DEMOS for the task (3 otherwise)
    demo_noise: float | None = None    # continuous: executed-action noise std (None: DEMO_NOISE)
    demo_epsilon: float = 0.3          # discrete: probability of a random executed action
    hidden: tuple = (256, 256)
    bc_epochs: float = 30.0
    frame_stack: int = FRAME_STACK
    band_tries: int = 3                # builds at most, to land in BAND (1: no retry)
    band_episodes: int = 20            # check episodes per build
    mental_rollouts: int = 10          # rollouts of the initial policy for the mental model
    target_rate: float = 0.25          # person: target intervention rate (fraction of ticks)
    closed_loop_episodes: int = 5  # episodes per closed-loop calibration step (0: open loop only)
    beta: float = 1.0                  # the person's smallest probit scale
    beta_ratio: float = 0.0            # the person's beta = max(beta, beta_ratio * c); 0: beta
    # the person's a_h: a sample of the expert's Gaussian (False: its mean); discrete: the expert's
    # choice
    sample_actions: bool = True
    # "segments": takes over for a while (SegmentPerson); "paper": decides afresh every tick (the
    # paper's)
    person: str = "segments"
    reaction_ticks: int = 3            # segments: ticks from the hazard firing to the takeover
    dwell_ticks: int = 10              # segments: shortest takeover; calm ticks before handback
    handback_p: float = 0.1            # segments: "calm" = hazard below this
    stall_ticks: int = 0               # segments: take over once the robot held still this long
    stall_tol: float = 0.003           # segments: "still" = every state dim within this range
    c: float | None = None             # fixed c instead of calibrating
    task: TaskOptions = field(default_factory=TaskOptions)


def default_cache_dir() -> Path:
    return Path(os.environ.get("MILE_ROS_BENCH_CACHE",
                               Path.home() / ".cache" / "mile_ros" / "bench"))


CACHE_VERSION = 5  # bump when what is cached changes meaning


INITIAL_FIELDS = ("n_demos", "demo_noise", "demo_epsilon", "hidden", "bc_epochs", "frame_stack",
                  "band_tries", "band_episodes", "task")


def _key(task_name: str, seed: int, cfg: InitialConfig, what: str) -> str:
    d = asdict(cfg)
    if what.startswith("initial"):  # the person's settings do not change the initial policy
        d = {k: d[k] for k in INITIAL_FIELDS}
    elif not cfg.stall_ticks:       # a person without the stall trigger: the key it always had
        d = {k: v for k, v in d.items() if k not in ("stall_ticks", "stall_tol")}
    blob = json.dumps([CACHE_VERSION, what, task_name, seed, d], sort_keys=True, default=str)
    return (f"{task_name.replace('/', '_')}-s{seed}-{what}-"
            f"{hashlib.sha256(blob.encode()).hexdigest()[:12]}")


def seeds_for(seed: int, stream: int, n: int) -> list[int]:
    """Disjoint per-purpose episode seeds.

    Demos (1), mental rollouts (2), collection (2 + iteration), expert demonstrations for the
    Fig. 5 ablation (97), initial-policy band check (98), c calibration (99).
    """
    return [1_000_000 * stream + 10_000 * int(seed) + i for i in range(n)]


def rollout(task, act_fn, seed: int, frame_stack: int = FRAME_STACK,
            max_steps: int | None = None, render=None) -> dict:
    """One episode with `act_fn(stacked_obs, raw_obs, t) -> (executed_action, label_action)`.

    `render() -> frame`, when given, is called on every tick before it acts ("image").
    """
    stacker = FrameStacker(frame_stack)
    obs = task.reset(seed)
    so = stacker.reset(obs)
    states, labels, frames, ret, info = [], [], [], 0.0, {"success": False}
    for t in range(max_steps or task.max_steps):
        a_exec, a_label = act_fn(so, obs, t)
        states.append(obs)
        labels.append(a_label)
        if render is not None:
            frames.append(render())
        obs, r, done, info = task.step(a_exec)
        so = stacker.push(obs)
        ret += r
        if done:
            break
    out = {"state": np.asarray(states), "action": np.asarray(labels),
           "success": bool(info["success"]), "return": ret}
    return out | ({"image": np.asarray(frames, np.uint8)} if render is not None else {})


def collect_demos(task, n: int, cfg: InitialConfig, seed: int, noise: float | None = None,
                  stream: int = 1, render=None) -> list[dict]:
    """`n` rollouts of the expert with noisy executed actions (labels = executed actions).

    `noise`: continuous action noise std (default cfg.demo_noise); discrete: cfg.demo_epsilon.
    `render`: as `rollout`'s (the frames do not change the demonstrations).
    """
    rng = np.random.default_rng([seed, 11, stream])
    sigma = demo_noise(getattr(task, "name", ""), cfg) if noise is None else float(noise)

    def noisy_expert(_so, obs, _t):
        a = task.expert(obs).action
        if task.kind == "discrete":
            a = int(rng.integers(task.act_dim)) if rng.random() < cfg.demo_epsilon else int(a)
        else:
            a = np.clip(a + sigma * rng.standard_normal(np.shape(a)), -1, 1)
        return a, a
    return [rollout(task, noisy_expert, s, cfg.frame_stack, render=render)
            for s in seeds_for(seed, stream, n)]


def task_specs(task, frame_stack: int = FRAME_STACK) -> tuple[ObsSpec, ActionSpec]:
    """Return the learning core's observation and action specs of a benchmark task."""
    names = list(getattr(task, "state_names", None) or [f"s{i}" for i in range(task.obs_dim)])
    actions = list(getattr(task, "action_names", None) or [f"a{i}" for i in range(task.act_dim)])
    if task.kind == "discrete":
        return ObsSpec(names, frame_stack), ActionSpec(actions, "discrete", task.act_dim)
    return ObsSpec(names, frame_stack), ActionSpec(actions)


def demo_noise(task_name: str, cfg: InitialConfig) -> float:
    """Return the demonstrations' executed-action noise std: cfg's, else the task's default."""
    if cfg.demo_noise is not None:
        return float(cfg.demo_noise)
    return DEMO_NOISE.get(task_name, DEMO_NOISE_OTHER)


def bc_config(cfg: InitialConfig, seed: int, task_name: str = "") -> MileConfig:
    """Return the training settings of the initial policy and of the mental model."""
    n = BC_UPDATES.get(task_name)
    budget = ({"min_updates": n, "max_updates": n, "holdout": 0.0} if n
              else {"min_updates": 300, "max_updates": 3000})
    return MileConfig(hidden=cfg.hidden, epochs=cfg.bc_epochs, lr=1e-3, seed=int(seed), **budget)


def fit_bc(episodes: list[dict], task, cfg: InitialConfig, seed: int):
    """BC of the episodes' "action" labels -> MileModel (train_bc, the robot trainer's BC)."""
    obs_spec, action_spec = task_specs(task, cfg.frame_stack)
    data = [{"state": e["state"], "a_r": e["action"]} for e in episodes]
    settings = bc_config(cfg, seed, getattr(task, "name", ""))
    return train_bc(data, obs_spec, action_spec, settings, target="a_r", progress=False)


def _cached(path: Path, build):
    if (path / "policy" / "manifest.json").exists() and (path / "info.json").exists():
        return load_checkpoint(path / "policy"), json.loads((path / "info.json").read_text())
    model, info = build()
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, tmp / "policy", extra_manifest={"built_by": "mile_ros.sim.initial",
                                                          "info": info})
    (tmp / "info.json").write_text(json.dumps(info, indent=1))
    try:
        os.replace(tmp, path)
    except OSError:  # another process built it first
        pass
    return load_checkpoint(path / "policy"), info


def _band_distance(success: float) -> float:
    return max(BAND[0] - success, success - BAND[1], 0.0)


def _next_try(n: int, noise: float, success: float) -> tuple[int, float]:
    """Return the next (n_demos, noise) after a build of success `success` outside the band."""
    if success < BAND[0]:
        return n + 2, noise
    return (n - 1, noise) if n > 1 else (n, noise * 1.5)


def _build_in_band(t, task_name: str, seed: int, cfg: InitialConfig):
    n = cfg.n_demos or DEFAULT_DEMOS.get(task_name, DEFAULT_DEMOS_OTHER)
    noise = demo_noise(task_name, cfg)
    tries, best = [], None
    check = seeds_for(seed, 98, cfg.band_episodes)
    for _ in range(max(1, cfg.band_tries)):
        demos = collect_demos(t, n, cfg, seed, noise)
        model = fit_bc(demos, t, cfg, seed)
        ev = evaluate_policy(task_name, lambda o, m=model: m.act(o), check, pool=[t],
                             frame_stack=cfg.frame_stack)
        success = float(np.mean(ev["success"]))
        info = {"n_demos": n, "demo_noise": noise,
                "demo_ticks": int(sum(len(d["state"]) for d in demos)),
                "demo_success": float(np.mean([d["success"] for d in demos])),
                "check_success": success}
        tries.append(info)
        if best is None or _band_distance(success) < _band_distance(best[1]["check_success"]):
            best = (model, info)
        if _band_distance(success) == 0 or cfg.n_demos is not None:
            break
        n, noise = _next_try(n, noise, success)
    model, info = best
    return model, info | {"in_band": _band_distance(info["check_success"]) == 0,
                          "band": list(BAND), "tries": tries}


def build_initial_policy(task_name: str, seed: int, cfg: InitialConfig | None = None,
                         cache_dir: str | os.PathLike | None = None, task=None):
    """Return (MileModel, info) for (task, seed); cached.

    info: n_demos, demo_noise, demo_ticks, demo_success, check_success, in_band, tries. A given
    `cfg.n_demos` is built once, as asked (no band retry).
    """
    cfg = cfg or InitialConfig()

    def build():
        t = task or make_task(task_name, seed=seed, options=cfg.task)
        return _build_in_band(t, task_name, seed, cfg)
    path = Path(cache_dir or default_cache_dir()) / _key(task_name, seed, cfg, "initial")
    return _cached(path, build)


def expert_demos(task_name: str, seed: int, n: int, cfg: InitialConfig | None = None,
                 task=None) -> list[dict]:
    """`n` demonstrations by the expert as the person acts (Gaussian sample, sigma of the task).

    For the Fig. 5 ablation (`mile-ros bench --demos N`); seed stream 97, disjoint from the
    initial policy's own demonstrations.
    """
    cfg = cfg or InitialConfig()
    t = task or make_task(task_name, seed=seed, options=cfg.task)
    return collect_demos(t, n, dataclass_replace(cfg, demo_epsilon=0.0), seed,
                         noise=cfg.task.expert_sigma, stream=97) if n > 0 else []


def build_person(task_name: str, seed: int, initial, cfg: InitialConfig | None = None,
                 cache_dir=None, task=None):
    """Build the simulated person for (task, seed).

    -> (SimulatedPerson, info {c, c_open_loop, open_loop_rate, closed_loop_rate, ...}).
    """
    cfg = cfg or InitialConfig()
    t = task or make_task(task_name, seed=seed, options=cfg.task)

    def build():
        eps = [rollout(t, lambda so, _o, _t: (initial.act(so),) * 2, s, cfg.frame_stack)
               for s in seeds_for(seed, 2, cfg.mental_rollouts)]
        mental = fit_bc(eps, t, cfg, seed + 7919)
        states = np.concatenate([e["state"] for e in eps])
        stacked = np.concatenate([stack_frames(e["state"], cfg.frame_stack) for e in eps])
        stats = ProbitStats([t.expert(s) for s in states], mental.action_distribution(stacked))
        c = cfg.c if cfg.c is not None else calibrate_c(stats, cfg.target_rate, cfg.beta,
                                                        beta_ratio=cfg.beta_ratio)
        info = {"c_open_loop": float(c), "beta": cfg.beta, "beta_ratio": cfg.beta_ratio,
                "target_rate": cfg.target_rate,
                "open_loop_rate": float(stats.p(c, person_scale(c, cfg.beta,
                                                                cfg.beta_ratio)).mean()),
                "mental_ticks": len(states),
                "initial_rollout_success": float(np.mean([e["success"] for e in eps]))}
        closed_rate = closed_success = None
        if cfg.c is None and cfg.closed_loop_episodes > 0:
            person = _person(t, mental, c, cfg, seed)
            c, closed_rate, closed_success = calibrate_c_closed_loop(
                t, initial, person, seeds_for(seed, 99, cfg.closed_loop_episodes),
                cfg.target_rate, cfg.frame_stack)
        return mental, info | {"c": float(c), "closed_loop_rate": closed_rate,
                               "closed_loop_success": closed_success,
                               "scale": person_scale(c, cfg.beta, cfg.beta_ratio)}
    path = Path(cache_dir or default_cache_dir()) / _key(task_name, seed, cfg, "person")
    mental, info = _cached(path, build)
    return _person(t, mental, info["c"], cfg, seed), info


def _person(task, mental, c: float, cfg: InitialConfig, seed: int) -> SimulatedPerson:
    kw = {"seed": seed, "state_dim": task.obs_dim, "beta_ratio": cfg.beta_ratio,
          "sample_actions": cfg.sample_actions}
    if cfg.person == "paper":
        return SimulatedPerson(task.expert, mental, c, cfg.beta, **kw)
    if cfg.person != "segments":
        raise ValueError(f"person must be 'segments' or 'paper', got {cfg.person!r}")
    return SegmentPerson(task.expert, mental, c, cfg.beta, reaction_ticks=cfg.reaction_ticks,
                         dwell_ticks=cfg.dwell_ticks, handback_p=cfg.handback_p,
                         stall_ticks=cfg.stall_ticks, stall_tol=cfg.stall_tol, **kw)


def widowx_initial_policy(seed: int, image_size: int | None = None):
    """Build (or load from the cache) the simulated WidowX task's initial policy for `seed`.

    Returns (policy, state names, action names, the InitialConfig it was built with). With
    `image_size` the policy is its image counterpart (`image_initial_policy`).
    """
    from mile_ros.sim.tasks import WidowXBenchTask

    cfg = InitialConfig()
    task = make_task("widowx", seed=seed, options=cfg.task)
    try:
        policy, info = build_initial_policy("widowx", seed, cfg, task=task)
    finally:
        task.close()
    if image_size is not None:
        task = WidowXBenchTask(seed, cfg.task.max_steps, cfg.task.expert_sigma, features="all")
        try:
            policy = image_initial_policy(task, seed, cfg, info, int(image_size))
        finally:
            task.close()
    return policy, list(policy.obs_spec.state_names), list(task.action_names), cfg


def image_initial_policy(task, seed: int, cfg: InitialConfig, info: dict, size: int):
    """Return the initial policy's image counterpart for the WidowX `task` (all features); cached.

    BC (the generic `bc_config`: early stopping, a CNN update costs ~50 ms) on the initial
    policy's own demonstrations (its seeds, count and
    noise, from its `info`), seen as the camera frame (`size` px square) and the end-effector
    position (learning.observations.obs_spec: the paper's real-robot observation).
    """
    from mile_ros.learning import observations as obs

    spec = obs.obs_spec(task.state_names, size)
    cols = [task.state_names.index(n) for n in spec.state_names]

    def build():
        demos = collect_demos(task, info["n_demos"], cfg, seed, info["demo_noise"],
                              render=lambda: task.render(size, size))
        data = [{"state": d["state"][:, cols], "a_r": d["action"], "image": d["image"]}
                for d in demos]
        model = train_bc(data, spec, obs.action_spec(task.action_names), bc_config(cfg, seed),
                         target="a_r", progress=False)
        return model, {"image_size": size, "n_demos": info["n_demos"],
                       "demo_noise": info["demo_noise"],
                       "demo_ticks": int(sum(len(d["state"]) for d in demos))}
    path = default_cache_dir() / _key("widowx", seed, cfg, f"initial-image{size}")
    return _cached(path, build)[0]
