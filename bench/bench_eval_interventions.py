"""Intervention prediction on a simulated collection: the paper's user-study analysis.

The analysis runs with the simulated person, whose true p(nu=1|s) is known at every tick.

    python bench/bench_eval_interventions.py [--task widowx] [--episodes 15] [--iterations 2]
        [--seed 0] [--bootstrap 1000] [--work DIR] [--sample-action]

ROS-free. The benchmark's initial policy and SimulatedPerson (probit, expert as pi_h, BC mental
model of the initial policy, c calibrated to ~25% of the ticks) collect `--episodes` episodes per
iteration; after each iteration but the last, MILE (mile_ros.learning.train_mile, warm-started
from the previous iteration) is fitted to all episodes so far and runs the next iteration. The
episodes are written as bags (the recorder's layout, iter<N>/) with the person's true p per tick
in a JSON-lines file, and `mile-ros eval-interventions` evaluates the last MILE checkpoint on the
last iteration, with the earlier iterations as --train-bags. Writes
bench/results/eval_interventions_<task>/ (report.json, plots) and
bench/results/eval_interventions_<task>.json (the report's figures and the settings).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mile_ros import bags  # noqa: E402
from mile_ros.interfaces import FLAG_NAMES  # noqa: E402
from mile_ros.tools import eval_interventions as ev

T0, DT = 1_700_000_000_000_000_000, 50_000_000


def write_episode_bag(path: Path, ep: dict, state_names, action_names, t0: int) -> list[dict]:
    """Write one episode as a bag (observation, action_robot, intervention, action_human).

    Returns the true-p rows {"stamp_ns", "p"}.
    """
    T = bags.typestore().types
    empty = np.array([], dtype=np.float64)

    def vec(names, values, ns):
        header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](
            sec=ns // 10**9, nanosec=ns % 10**9), frame_id="")
        return T["sensor_msgs/msg/JointState"](header=header, name=list(names),
                                               position=np.asarray(values, float),
                                               velocity=empty, effort=empty)
    rows = []
    with bags.EpisodeBagWriter(path, record_images=False, fsync=False) as w:
        for k in range(len(ep["nu"])):
            s = t0 + k * DT
            w.write("observation", vec(state_names, ep["state"][k], s), s)
            w.write("action_robot", vec(action_names, ep["a_r"][k], s), s)
            w.write("intervention", vec(FLAG_NAMES, [float(ep["nu"][k]), 0, 0], s), s)
            if ep["nu"][k]:
                w.write("action_human", vec(action_names, ep["a_h"][k], s), s)
            rows.append({"stamp_ns": s, "p": float(ep["p"][k])})
        w.close({"episode": int(t0 // 10**11), "success": bool(ep["success"])})
    return rows


class SampledActionPerson:
    """The person acting with a sample of the expert's Gaussian instead of its mean."""

    def __init__(self, person, rng):
        self.person, self.rng = person, rng

    def reseed(self, seed):
        self.person.reseed(seed)

    def decide(self, so, e):
        nu, a_h, p = self.person.decide(so, e)
        if nu and e.log_std is not None:
            a_h = np.clip(a_h + np.exp(e.log_std) * self.rng.standard_normal(np.shape(a_h)), -1, 1)
        return nu, a_h, p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n    python")[0])
    ap.add_argument("--task", default="widowx")
    ap.add_argument("--episodes", type=int, default=15, help="episodes per iteration")
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--work", default=None, help="bags and checkpoints (default: a temp dir)")
    ap.add_argument("--sample-action", action="store_true",
                    help="the person acts with a sample of the expert's Gaussian (the model's "
                         "assumption) instead of its mean (the paper's simulated person)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    from mile_ros.learning import ActionSpec, MileConfig, ObsSpec, train_mile
    from mile_ros.learning.checkpoint import save_checkpoint
    from mile_ros.sim.initial import InitialConfig, build_initial_policy, build_person, seeds_for
    from mile_ros.sim.person import collect_episode
    from mile_ros.sim.tasks import make_task

    name = args.task.replace("/", "_") + ("_sampled" if args.sample_action else "")
    results = REPO / "bench" / "results"
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="eval_interventions_"))
    for old in ("bags", "checkpoints"):          # a re-run starts afresh
        if (work / old).exists():
            shutil.rmtree(work / old)
    timings = {}
    t = time.perf_counter()
    cfg = InitialConfig()
    task = make_task(args.task, seed=args.seed, options=cfg.task)
    initial, _ = build_initial_policy(args.task, args.seed, cfg, task=task)
    person, person_info = build_person(args.task, args.seed, initial, cfg, task=task)
    if args.sample_action:
        person = SampledActionPerson(person, np.random.default_rng([args.seed, 17]))
    timings["initial_policy_and_person_s"] = time.perf_counter() - t
    obs_spec = ObsSpec(list(task.state_names), frame_stack=cfg.frame_stack)
    act_spec = ActionSpec(list(task.action_names), kind="continuous")
    policy, model, episodes, rows, per_iter = initial, None, [], [], []
    for it in range(1, args.iterations + 1):
        t = time.perf_counter()
        new = [collect_episode(task, policy, person, s, cfg.frame_stack, [args.seed, it, j, 5])
               for j, s in enumerate(seeds_for(args.seed, 2 + it, args.episodes))]
        timings[f"collect_iter{it}_s"] = time.perf_counter() - t
        for j, ep in enumerate(new):
            index = len(episodes) + j
            rows += write_episode_bag(work / "bags" / f"iter{it}" / f"episode_{index:03d}", ep,
                                      obs_spec.state_names, act_spec.names, T0 + index * 10**11)
        episodes += new
        nu = np.concatenate([e["nu"] for e in new])
        per_iter.append({"iteration": it, "episodes": len(new), "ticks": len(nu),
                         "intervention_rate": float(nu.mean()),
                         "mean_true_p": float(np.mean(np.concatenate([e["p"] for e in new]))),
                         "success_rate": float(np.mean([e["success"] for e in new]))})
        print(f"iteration {it}: {per_iter[-1]}", flush=True)
        if it == args.iterations:
            break
        t = time.perf_counter()
        arrays = [{k: e[k] for k in ("state", "a_r", "a_h", "nu")} for e in episodes]
        model, metrics = train_mile(arrays, obs_spec, act_spec, MileConfig(seed=args.seed + it),
                                    init=model, progress=False)
        timings[f"train_iter{it}_s"] = time.perf_counter() - t
        policy = model
        print(f"MILE after iteration {it}: c={metrics.get('c')}, updates={metrics.get('updates')}",
              flush=True)
    task.close()
    (work / "true_p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ckpt_id = save_checkpoint(model, work / "checkpoints")
    ckpt = next(p.parent for p in (work / "checkpoints").rglob("manifest.json"))
    out = results / f"eval_interventions_{name}"
    last = args.iterations
    cmd = ["--model", str(ckpt), "--bags", str(work / "bags" / f"iter{last}"),
           "--train-bags", str(work / "bags" / f"iter{last - 1}"), "--out", str(out),
           "--bootstrap", str(args.bootstrap), "--seed", str(args.seed),
           "--true-p", str(work / "true_p.jsonl")]
    t = time.perf_counter()
    rc = ev.main(cmd)
    timings["eval_interventions_s"] = time.perf_counter() - t
    if rc:
        return rc
    report = json.loads((out / "report.json").read_text())
    summary = {
        "task": args.task, "seed": args.seed, "episodes_per_iteration": args.episodes,
        "iterations": per_iter, "person": person_info,
        "person_action": "expert sample" if args.sample_action else "expert mean (paper)",
        "checkpoint": str(ckpt_id),
        "command": "mile-ros eval-interventions " + " ".join(cmd).replace(str(work), "<work>"),
        "estimators": {n: {m: v["value"] for m, v in ms.items()}
                       for n, ms in report["estimators"].items()},
        "ci95": {n: {m: v["ci"] for m, v in ms.items()} for n, ms in report["estimators"].items()},
        "differences": report["differences"], "truth": report["truth"],
        "majority": report["majority"], "classifier": report["classifier"],
        "model": report["model"], "timings_s": timings,
    }
    (results / f"eval_interventions_{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {results / f'eval_interventions_{name}.json'} and {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
