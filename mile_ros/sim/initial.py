"""The initial policy and the simulated person of a (task, training seed).

Built by the benchmark itself, deterministic per seed and cached on disk.

- Initial policy: BC on a few noisy expert demonstrations (continuous: Gaussian noise on the
  executed action; discrete: epsilon-random executed action; labels are the executed actions), so
  it is mediocre -- the benchmark aims for 10-50% success and reports what it got.
- Person: the mental model is BC on deterministic rollouts of the initial policy (without a
  person); c is first calibrated so that the mean intervention probability over those rollouts'
  states equals the target rate, then refined in closed loop (interventions steer the robot to
  states where fewer are needed, so the open-loop c undershoots) on a few separate episodes.
  Both rates are reported; the protocols report the rate achieved during collection.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from mile_ros.learning.specs import FRAME_STACK, FrameStacker, stack_frames
from mile_ros.learning.weighted_bc import BenchPolicy, bc_steps, fit_weighted
from mile_ros.sim.person import (
    ProbitStats,
    SimulatedPerson,
    calibrate_c,
    calibrate_c_closed_loop,
)
from mile_ros.sim.tasks import TaskOptions, make_task

# Per-task defaults chosen so the initial policy is mediocre (10-50% success on the training
# seed's own check); any task not listed uses DEFAULT_DEMOS.
DEFAULT_DEMOS = {"lunarlander": 6, "metaworld/drawer-open": 1, "metaworld/button-press": 1,
                 "metaworld/peg-insert-side": 6, "widowx": 3}


@dataclass
class InitialConfig:
    n_demos: int | None = None         # None: DEFAULT_DEMOS for the task (3 otherwise)
    demo_noise: float = 0.3            # continuous: std of the executed-action noise
    demo_epsilon: float = 0.3          # discrete: probability of a random executed action
    hidden: tuple = (256, 256)
    bc_epochs: float = 30.0
    frame_stack: int = FRAME_STACK
    mental_rollouts: int = 10          # rollouts of the initial policy for the mental model
    target_rate: float = 0.25          # person: target intervention rate (fraction of ticks)
    closed_loop_episodes: int = 5      # episodes per closed-loop calibration step
                                       # (0: open loop only)
    beta: float = 1.0
    c: float | None = None             # fixed c instead of calibrating
    task: TaskOptions = field(default_factory=TaskOptions)


def default_cache_dir() -> Path:
    return Path(os.environ.get("MILE_ROS_BENCH_CACHE",
                               Path.home() / ".cache" / "mile_ros" / "bench"))


CACHE_VERSION = 3  # bump when what is cached changes meaning


INITIAL_FIELDS = ("n_demos", "demo_noise", "demo_epsilon", "hidden", "bc_epochs", "frame_stack",
                  "task")


def _key(task_name: str, seed: int, cfg: InitialConfig, what: str) -> str:
    d = asdict(cfg)
    if what == "initial":  # the person's settings do not change the initial policy
        d = {k: d[k] for k in INITIAL_FIELDS}
    blob = json.dumps([CACHE_VERSION, what, task_name, seed, d], sort_keys=True, default=str)
    return (f"{task_name.replace('/', '_')}-s{seed}-{what}-"
            f"{hashlib.sha256(blob.encode()).hexdigest()[:12]}")


def seeds_for(seed: int, stream: int, n: int) -> list[int]:
    """Disjoint per-purpose episode seeds.

    Demos (1), mental rollouts (2), collection (2 + iteration), c calibration (99).
    """
    return [1_000_000 * stream + 10_000 * int(seed) + i for i in range(n)]


def rollout(task, act_fn, seed: int, frame_stack: int = FRAME_STACK,
            max_steps: int | None = None) -> dict:
    """One episode with `act_fn(stacked_obs, raw_obs, t) -> (executed_action, label_action)`."""
    stacker = FrameStacker(frame_stack)
    obs = task.reset(seed)
    so = stacker.reset(obs)
    states, labels, ret, info = [], [], 0.0, {"success": False}
    for t in range(max_steps or task.max_steps):
        a_exec, a_label = act_fn(so, obs, t)
        states.append(obs)
        labels.append(a_label)
        obs, r, done, info = task.step(a_exec)
        so = stacker.push(obs)
        ret += r
        if done:
            break
    return {"state": np.asarray(states), "action": np.asarray(labels),
            "success": bool(info["success"]), "return": ret}


def collect_demos(task, n: int, cfg: InitialConfig, seed: int) -> list[dict]:
    rng = np.random.default_rng([seed, 11])

    def noisy_expert(_so, obs, _t):
        a = task.expert(obs).action
        if task.kind == "discrete":
            a = int(rng.integers(task.act_dim)) if rng.random() < cfg.demo_epsilon else int(a)
        else:
            a = np.clip(a + cfg.demo_noise * rng.standard_normal(np.shape(a)), -1, 1)
        return a, a
    return [rollout(task, noisy_expert, s, cfg.frame_stack) for s in seeds_for(seed, 1, n)]


def fit_bc(episodes: list[dict], task, cfg: InitialConfig, seed: int) -> BenchPolicy:
    torch.manual_seed(seed)
    obs = np.concatenate([stack_frames(e["state"], cfg.frame_stack) for e in episodes])
    act = np.concatenate([e["action"] for e in episodes])
    pol = BenchPolicy(obs.shape[1], task.act_dim, task.kind, cfg.hidden)
    pol.set_normalizer(obs)
    fit_weighted(pol, obs, act, steps=bc_steps(len(obs), cfg.bc_epochs), seed=seed)
    return pol


def _cached(path: Path, build):
    if (path / "policy.pt").exists() and (path / "info.json").exists():
        return BenchPolicy.load(path / "policy.pt"), json.loads((path / "info.json").read_text())
    pol, info = build()
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    pol.save(tmp / "policy.pt")
    (tmp / "info.json").write_text(json.dumps(info, indent=1))
    try:
        os.replace(tmp, path)
    except OSError:  # another process built it first
        pass
    return pol, info


def build_initial_policy(task_name: str, seed: int, cfg: InitialConfig | None = None,
                         cache_dir: str | os.PathLike | None = None, task=None):
    """-> (BenchPolicy, info {n_demos, demo_ticks, demo_success}) for (task, seed); cached."""
    cfg = cfg or InitialConfig()
    n = cfg.n_demos or DEFAULT_DEMOS.get(task_name, 3)

    def build():
        t = task or make_task(task_name, seed=seed, options=cfg.task)
        demos = collect_demos(t, n, cfg, seed)
        pol = fit_bc(demos, t, cfg, seed)
        return pol, {"n_demos": n, "demo_ticks": int(sum(len(d["state"]) for d in demos)),
                     "demo_success": float(np.mean([d["success"] for d in demos]))}
    path = Path(cache_dir or default_cache_dir()) / _key(task_name, seed, cfg, "initial")
    return _cached(path, build)


def demos_for(task_name: str, seed: int, cfg: InitialConfig | None = None,
              task=None) -> list[dict]:
    """Return the initial policy's demonstrations again (deterministic).

    For methods that aggregate them.
    """
    cfg = cfg or InitialConfig()
    t = task or make_task(task_name, seed=seed, options=cfg.task)
    return collect_demos(t, cfg.n_demos or DEFAULT_DEMOS.get(task_name, 3), cfg, seed)


def build_person(task_name: str, seed: int, initial: BenchPolicy, cfg: InitialConfig | None = None,
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
        c = cfg.c if cfg.c is not None else calibrate_c(stats, cfg.target_rate, cfg.beta)
        info = {"c_open_loop": float(c), "beta": cfg.beta, "target_rate": cfg.target_rate,
                "open_loop_rate": float(stats.p(c, cfg.beta).mean()), "mental_ticks": len(states),
                "initial_rollout_success": float(np.mean([e["success"] for e in eps]))}
        closed_rate = None
        if cfg.c is None and cfg.closed_loop_episodes > 0:
            person = SimulatedPerson(t.expert, mental, c, cfg.beta, seed=seed, state_dim=t.obs_dim)
            c, closed_rate = calibrate_c_closed_loop(
                t, initial, person, seeds_for(seed, 99, cfg.closed_loop_episodes),
                cfg.target_rate, cfg.frame_stack)
        return mental, info | {"c": float(c), "closed_loop_rate": closed_rate}
    path = Path(cache_dir or default_cache_dir()) / _key(task_name, seed, cfg, "person")
    mental, info = _cached(path, build)
    person = SimulatedPerson(t.expert, mental, info["c"], info["beta"], seed=seed,
                             state_dim=t.obs_dim)
    return person, info


def widowx_initial_policy(seed: int):
    """Build (or load from the cache) the simulated WidowX task's initial policy for `seed`.

    Returns (policy, state names, action names, the InitialConfig it was built with).
    """
    cfg = InitialConfig()
    task = make_task("widowx", seed=seed, options=cfg.task)
    try:
        policy, _info = build_initial_policy("widowx", seed, cfg, task=task)
        return policy, list(task.state_names), list(task.action_names), cfg
    finally:
        task.close()
