"""`mile-ros bench`: the paper's simulation experiments against the baselines.

    mile-ros bench --task metaworld/drawer-open \
        --methods mile,bc-intervention,hg-dagger,iwr,sirius,rlif \
        --iterations 20 --episodes 1 --seeds 3 --out results.json [--plot curves.png]

Protocol (a) of the paper is `--iterations 1 --episodes 15`, (b) `--iterations 20 --episodes 1`.
Re-running the same command resumes an interrupted run (see protocols.py).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from mile_ros.benchmark.protocols import METHODS, BenchConfig, parse_methods, run_bench
from mile_ros.benchmark.results import ResultsError, summary_table
from mile_ros.learning.config import parse_settings
from mile_ros.sim.initial import InitialConfig
from mile_ros.sim.tasks import TaskOptions, UnknownNameError, canonical_task_name


def _seeds(text: str) -> list[int]:
    """'3' -> [0,1,2]; '0,4,7' -> [0,4,7]."""
    try:
        if "," in text:
            return [int(s) for s in text.split(",") if s.strip()]
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds: expected a count or a comma list, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("--seeds: need at least one seed")
    return list(range(n))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mile-ros bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", required=True,
                   help="lunarlander | widowx | metaworld/<name> (e.g. metaworld/drawer-open)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma list of {','.join(METHODS)}")
    p.add_argument("--iterations", type=int, default=1,
                   help="N: collect/train iterations (default 1)")
    p.add_argument("--episodes", type=int, default=15,
                   help="k: episodes per iteration (default 15)")
    p.add_argument("--seeds", type=_seeds, default=[0, 1, 2],
                   help="training seeds: a count or a comma list")
    p.add_argument("--eval-episodes", type=int, default=100,
                   help="fixed evaluation episodes at iteration 0, every 5th and the last "
                        "(default 100)")
    p.add_argument("--eval-episodes-other", type=int, default=50,
                   help="evaluation episodes at the other iterations (default 50)")
    p.add_argument("--demos", type=int, default=0, metavar="N",
                   help="expert demonstrations for the baselines (the paper's Fig. 5 ablation; "
                        "MILE gets none). Default 0: interventions only (Figs. 3-4)")
    p.add_argument("--warm-start", action="store_true",
                   help="MILE starts each iteration from its previous model (the paper) "
                        "instead of the initial policy")
    p.add_argument("--no-equalize", action="store_true",
                   help="baselines collect exactly k episodes instead of matching MILE's "
                        "intervention count")
    p.add_argument("--target-rate", type=float, default=0.25,
                   help="person: target intervention rate in closed loop (default 0.25)")
    p.add_argument("--c", type=float, default=None, help="person: fixed c instead of calibrating")
    p.add_argument("--beta", type=float, default=1.0,
                   help="person: smallest probit scale (default 1)")
    p.add_argument("--beta-ratio", type=float, default=0.0,
                   help="person: probit scale = max(beta, ratio * c) (default 0: beta)")
    p.add_argument("--deterministic-person", action="store_true",
                   help="person: act with the expert's mean instead of a sample")
    p.add_argument("--n-demos", type=int, default=None,
                   help="demonstrations for the initial policy")
    p.add_argument("--expert-sigma", type=float, default=0.1, help="Gaussian experts' fixed sigma")
    p.add_argument("--expert-temperature", type=float, default=0.05,
                   help="LunarLander expert temperature")
    p.add_argument("--max-steps", type=int, default=None,
                   help="episode cap (default: 500 Meta-World, 1000 LunarLander)")
    p.add_argument("--train", action="append", default=[], metavar="NAME=VALUE",
                   help="MileConfig setting for every method's training loop, e.g. "
                        "--train max_updates=2000 (repeatable)")
    p.add_argument("--mile", action="append", default=[], metavar="NAME=VALUE",
                   help="MileConfig setting for MILE only, e.g. --mile beta=10 "
                        "--mile mental_anchor=0 (repeatable)")
    p.add_argument("--out", required=True,
                   help="results JSON (resumed when it exists with the same config)")
    p.add_argument("--no-resume", action="store_true", help="start over even when --out exists")
    p.add_argument("--plot", default=None, help="write a success-vs-iteration plot (png/pdf)")
    p.add_argument("--cache-dir", default=None,
                   help="initial policy / person cache (default ~/.cache/mile_ros/bench)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    import torch
    torch.set_num_threads(1)
    os.environ.setdefault("MUJOCO_GL", "egl")
    args = build_parser().parse_args(argv)
    try:
        task = canonical_task_name(args.task)
        methods = parse_methods(args.methods)
        for name, v in (("--iterations", args.iterations), ("--episodes", args.episodes),
                        ("--eval-episodes", args.eval_episodes),
                        ("--eval-episodes-other", args.eval_episodes_other)):
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if args.demos < 0:
            raise ValueError(f"--demos must be >= 0, got {args.demos}")
        cfg = BenchConfig(
            task=task, methods=methods, iterations=args.iterations, episodes=args.episodes,
            seeds=args.seeds, n_eval=args.eval_episodes, n_eval_other=args.eval_episodes_other,
            equalize=not args.no_equalize, demos=args.demos, warm_start=args.warm_start,
            initial=InitialConfig(n_demos=args.n_demos, target_rate=args.target_rate,
                                  beta=args.beta, beta_ratio=args.beta_ratio, c=args.c,
                                  sample_actions=not args.deterministic_person,
                                  task=TaskOptions(args.max_steps, args.expert_sigma,
                                                   args.expert_temperature)),
            train=parse_settings(args.train, "--train", exclude=("seed",)),
            mile=parse_settings(args.mile, "--mile", exclude=("seed",)))
        cfg.mile_config(0)     # bad settings fail now, not after an hour
        cfg.training_config(0)
        t0 = time.time()
        results = run_bench(cfg, args.out, resume=not args.no_resume, progress=not args.quiet,
                            cache_dir=args.cache_dir)
    except (UnknownNameError, ResultsError, ValueError) as e:
        print(f"mile-ros bench: error: {e}", file=sys.stderr)
        return 2
    d = results.data
    print(f"\n{task}: expert success {d['experts']['expert']['success_rate']:.3f} "
          f"(mean return {d['experts']['expert']['mean_return']:.1f}); "
          f"wall {time.time() - t0:.0f} s")
    for s, info in d["initial"].items():
        p = d["person"][s]
        cl = p.get("closed_loop_rate")
        print(f"  seed {s}: initial success {info['success_rate']:.3f}; "
              f"person c={p['c']:.3f}, intervention "
              f"rate {p['open_loop_rate']:.3f} open loop"
              + (f", {cl:.3f} closed loop (success {p['closed_loop_success']:.2f})"
                 if cl is not None else ""))
    print(summary_table(d))
    if args.plot:
        from mile_ros.benchmark.plots import plot_curves
        plot_curves(d, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
