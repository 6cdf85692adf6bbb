"""The paper's protocols.

N iterations x k episodes of collection under the simulated person, training, and evaluation
without the person.

For every training seed: the initial policy and the person are built (cached); iteration 0 is the
initial policy's evaluation, shared by all methods. Then each method, from the initial policy,
repeats: collect (its current policy proposes a_r; the person decides from the state alone; the
executed action is a_h when nu=1), train on everything it has collected, evaluate on the fixed
evaluation seeds. Episode seeds and the person's random stream depend only on (training seed,
iteration, episode index), so every method meets the same situations.

No method gets the initial policy's demonstrations or any other expert data besides the
interventions (the paper's Figs. 3-4), unless `demos` N > 0 (its Fig. 5 ablation): then the
baselines get N expert demonstrations and MILE none.

Equal intervention counts (protocol (a), `equalize=True`): MILE collects its k episodes first;
every baseline collects at least k episodes and keeps collecting (up to 10k) until it holds at
least as many intervention ticks as MILE did in that iteration.

Resumable: after each (method, seed, iteration) the results file is rewritten, and the method's
state (policy + collected episodes) saved under <out>.work/.
"""
from __future__ import annotations

import io
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from mile_ros._io import atomic_write
from mile_ros.benchmark.results import Results
from mile_ros.learning import MileConfig, train_mile
from mile_ros.learning.baselines import BASELINES, BaselineConfig
from mile_ros.sim.initial import (
    InitialConfig,
    build_initial_policy,
    build_person,
    expert_demos,
    seeds_for,
)
from mile_ros.sim.person import collect_episode
from mile_ros.sim.tasks import UnknownNameError, canonical_task_name, evaluate_policy, make_task

METHODS = ["mile"] + list(BASELINES)
EVAL_SEED_BASE = 100_000_000  # evaluation episodes use seeds EVAL_SEED_BASE + i, i < n_eval


def parse_methods(text) -> list[str]:
    names = [m.strip().lower() for m in (text.split(",") if isinstance(text, str) else text)
             if m.strip()]
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise UnknownNameError(f"unknown method(s) {', '.join(bad) or '(none given)'}; "
                               f"valid methods: {', '.join(METHODS)}")
    # MILE first: baselines match its intervention count
    return sorted(set(names), key=METHODS.index)


@dataclass
class BenchConfig:
    task: str
    methods: list
    iterations: int = 1
    episodes: int = 15
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    n_eval: int = 100          # evaluation episodes at iteration 0, the last one and every 5th
    n_eval_other: int = 50     # ... and at the other iterations (to bound the cost)
    equalize: bool = True
    demos: int = 0             # expert demonstrations for the baselines (Fig. 5); MILE none
    # MILE starts from its previous model (the paper) or, like the baselines, from the initial
    # policy
    warm_start: bool = False
    initial: InitialConfig = field(default_factory=InitialConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    train: dict = field(default_factory=dict)  # MileConfig settings for every method's loop
    mile: dict = field(default_factory=dict)   # MileConfig settings for MILE only (on top)
    n_envs: int = 10

    def to_json(self) -> dict:
        d = asdict(self)
        d["initial"]["hidden"] = list(d["initial"]["hidden"])
        d["baseline"]["rlif_hidden"] = list(d["baseline"]["rlif_hidden"])
        d["mile_resolved"] = self.mile_config(0).to_dict()
        return d

    def training_config(self, seed: int) -> MileConfig:
        """Return the training loop's settings of every method (MileConfig, `train` applied)."""
        return MileConfig.with_settings(self.train, "--train", seed=int(seed))

    def mile_config(self, seed: int) -> MileConfig:
        """Return MILE's settings: MileConfig's defaults (the trainer's), `train`, `mile`."""
        return MileConfig.with_settings({**self.train, **self.mile}, "--mile", seed=int(seed))

    def n_eval_at(self, iteration: int) -> int:
        full = iteration in (0, self.iterations) or iteration % 5 == 0
        return self.n_eval if full else min(self.n_eval, self.n_eval_other)


def train_mile_method(cfg: BenchConfig, prev, initial, episodes, seed: int):
    """One MILE iteration: `train_mile` (the robot trainer's) on everything collected so far.

    Started from the previous model (policy and mental model) when cfg.warm_start, else from the
    initial policy (both networks: the person's presumed mental model); the first iteration
    always starts from the initial policy. No demonstrations.
    """
    start = prev if (prev is not None and cfg.warm_start) else initial
    model, _ = train_mile(episodes, initial.obs_spec, initial.action_spec, cfg.mile_config(seed),
                          init=start, progress=False)
    return model


def _act_fn(policy):
    return lambda obs: policy.act(obs)


def run_bench(cfg: BenchConfig, out: str | os.PathLike, resume: bool = True, progress: bool = True,
              cache_dir=None, log=print) -> Results:
    torch.set_num_threads(1)
    cfg.task = canonical_task_name(cfg.task)
    cfg.methods = parse_methods(cfg.methods)
    results = Results.open(out, cfg.to_json(), resume=resume)
    work = Path(str(out) + ".work")
    from tqdm import tqdm
    total = len(cfg.seeds) * len(cfg.methods) * cfg.iterations
    done_units = sum(1 for m in cfg.methods for s in cfg.seeds for r in results.records(m, s)
                     if r["iteration"] > 0)
    bar = tqdm(total=total, initial=done_units, desc=f"bench {cfg.task}", disable=not progress,
               unit="it")
    eval_seeds = list(range(EVAL_SEED_BASE, EVAL_SEED_BASE + cfg.n_eval))
    task = make_task(cfg.task, seed=0, options=cfg.initial.task)
    pool = [task] + [make_task(cfg.task, seed=i, options=cfg.initial.task)
                     for i in range(1, cfg.n_envs)]
    try:
        if "expert" not in results.data["experts"]:
            t0 = time.time()
            S = task.obs_dim
            ev = evaluate_policy(cfg.task, lambda o: [task.expert(x[:S]).action for x in o],
                                 eval_seeds, pool=pool, frame_stack=cfg.initial.frame_stack)
            results.data["experts"]["expert"] = _eval_summary(ev) | {"seconds": time.time() - t0}
            results.save()
        for seed in cfg.seeds:
            _run_seed(cfg, seed, task, pool, eval_seeds, results, work, bar, cache_dir, log)
    finally:
        bar.close()
        for e in pool:
            e.close()
    return results


def _eval_summary(ev: dict) -> dict:
    return {"success_rate": float(np.mean(ev["success"])),
            "mean_return": float(np.mean(ev["return"])),
            "mean_length": float(np.mean(ev["length"])), "n": len(ev["success"])}


def _collect(cfg, task, policy, person, seed, it, target):
    """Collect one iteration's episodes with the person.

    `cfg.episodes` of them, or (with `target`) as many more as it takes to reach `target`
    interventions, at most ten times as many.
    """
    new_eps = []
    for j in range(cfg.episodes * (10 if target is not None else 1)):
        ep_seed = seeds_for(seed, 2 + it, 10 * cfg.episodes)[j]
        new_eps.append(collect_episode(task, policy, person, ep_seed,
                                       cfg.initial.frame_stack, [seed, it, j, 5]))
        n_int = sum(int(e["nu"].sum()) for e in new_eps)
        if target is None and len(new_eps) >= cfg.episodes:
            break
        if target is not None and len(new_eps) >= cfg.episodes and n_int >= target:
            break
    return new_eps


def _record(it, ev, n_new, episodes, new_eps, seconds: dict) -> dict:
    """Build the results record of one iteration: evaluation, data counts, timings."""
    ticks = int(sum(len(e["nu"]) for e in new_eps))
    return {"iteration": it, "success_rate": float(np.mean(ev["success"])),
            "mean_return": float(np.mean(ev["return"])),
            "interventions": n_new,
            "interventions_total": int(sum(e["nu"].sum() for e in episodes)),
            "ticks": ticks, "episodes": len(new_eps),
            "intervention_rate": n_new / max(1, ticks),
            "collect_success": float(np.mean([e["success"] for e in new_eps]))} | seconds


def _run_seed(cfg, seed, task, pool, eval_seeds, results, work, bar, cache_dir, log):
    t0 = time.time()
    torch.manual_seed(seed)
    initial, init_info = build_initial_policy(cfg.task, seed, cfg.initial, cache_dir, task=task)
    person, person_info = build_person(cfg.task, seed, initial, cfg.initial, cache_dir, task=task)
    key = str(seed)
    ran = key not in results.data["initial"]  # a resumed, finished seed keeps its wall time
    if key not in results.data["initial"]:
        ev = evaluate_policy(cfg.task, _act_fn(initial), eval_seeds[:cfg.n_eval_at(0)],
                             pool=pool, frame_stack=cfg.initial.frame_stack)
        results.data["initial"][key] = (init_info | _eval_summary(ev)
                                        | {"seconds": time.time() - t0})
        results.data["person"][key] = person_info
        results.save()
    init_rate = results.data["initial"][key]["success_rate"]
    demos = expert_demos(cfg.task, seed, cfg.demos, cfg.initial, task=task)   # [] unless Fig. 5
    mile_counts: dict[int, int] = {}
    for method in cfg.methods:
        if not any(r["iteration"] == 0 for r in results.records(method, seed)):
            results.add_record(method, seed, {"iteration": 0, "success_rate": init_rate,
                                              "interventions": 0, "interventions_total": 0,
                                              "ticks": 0, "episodes": 0})
        state_path = work / method / f"seed{seed}.pt"
        policy, episodes, start = initial, [], 1
        done_its = [r["iteration"] for r in results.records(method, seed) if r["iteration"] > 0]
        if done_its and state_path.exists():
            st = torch.load(state_path, weights_only=False)
            if st["iteration"] == max(done_its):
                policy, episodes, start = st["policy"], st["episodes"], st["iteration"] + 1
        elif done_its:
            done_its = []  # results without the saved state: redo this method for this seed
        if method == "mile":
            mile_counts = {r["iteration"]: r["interventions"]
                           for r in results.records("mile", seed) if r["iteration"] > 0}
        for it in range(start, cfg.iterations + 1):
            ran = True
            tc = time.time()
            target = mile_counts.get(it) if (cfg.equalize and method != "mile") else None
            new_eps = _collect(cfg, task, policy, person, seed, it, target)
            episodes = episodes + new_eps
            tt = time.time()
            if method == "mile":
                policy = train_mile_method(cfg, policy if it > 1 else None, initial, episodes,
                                           seed * 1000 + it)
            else:
                policy = BASELINES[method](initial, episodes, demos, cfg.baseline,
                                           cfg.training_config(seed * 1000 + it))
            te = time.time()
            ev = evaluate_policy(cfg.task, _act_fn(policy), eval_seeds[:cfg.n_eval_at(it)],
                                 pool=pool, frame_stack=cfg.initial.frame_stack)
            n_new = sum(int(e["nu"].sum()) for e in new_eps)
            if method == "mile":
                mile_counts[it] = n_new
            rec = _record(it, ev, n_new, episodes, new_eps,
                          {"collect_seconds": tt - tc, "train_seconds": te - tt,
                           "eval_seconds": time.time() - te})
            state_path.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            torch.save({"iteration": it, "policy": policy, "episodes": episodes}, buf)
            atomic_write(state_path, buf.getvalue())
            results.add_record(method, seed, rec)
            bar.update(1)
            bar.set_postfix(method=method, seed=seed, it=it, success=f"{rec['success_rate']:.2f}")
    if ran:
        results.data["timing"][key] = results.data["timing"].get(key, 0.0) + (time.time() - t0)
        results.save()
