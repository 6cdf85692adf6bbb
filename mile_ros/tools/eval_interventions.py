"""`mile-ros eval-interventions`: how well a fitted MILE model predicts when the person intervenes.

    mile-ros eval-interventions --model CKPT --bags DIR [DIR ...] [--train-bags DIR ...]
                                [--out report/] [--bootstrap N] [--seed S] [--true-p FILE]
                                [--onset-horizon TICKS]

The analysis of the paper's user study, on a lab's own bags: on every control tick of the
evaluation bags, the MILE checkpoint's p(nu=1|s), a majority estimator and (with --train-bags) a
neural classifier trained on the earlier iterations are scored with episode-bootstrap intervals;
with --true-p (a simulated person's true p per tick) the truth joins as an oracle. Each is scored
per tick and as the hazard of a takeover onset on the robot-controlled ticks (onset AUC and
log-likelihood, calibration, time-to-onset error; mile_ros.evaluation.onsets). Prints a table
and writes <out>/report.json with the plots. The estimators, metrics, plots and report are
mile_ros.evaluation; this module is the command line over them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mile_ros.evaluation import EvalError
from mile_ros.evaluation.estimators import (
    episode_dicts,
    load_bags,
    load_model,
    read_true_p,
)
from mile_ros.evaluation.onsets import HORIZON
from mile_ros.evaluation.report import format_table, run


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="mile-ros eval-interventions",
        description="How well the MILE intervention model of a checkpoint predicts when the "
                    "person intervenes, against a majority estimator and a neural classifier "
                    "trained on earlier iterations.")
    ap.add_argument("--model", required=True,
                    help="checkpoint directory (or a directory with a `latest` pointer)")
    ap.add_argument("--bags", required=True, nargs="+", metavar="DIR",
                    help="evaluation episode bags (a bag, a directory of bags, or iter*/ "
                         "directories; exactly these, earlier iterations are not added)")
    ap.add_argument("--train-bags", nargs="+", metavar="DIR", default=None,
                    help="training bags for the classifier and the majority rate (the earlier "
                         "iterations; given `iterN`, iter1..iterN-1 beside it come too)")
    ap.add_argument("--out", default="intervention_report",
                    help="report directory (default: intervention_report)")
    ap.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                    help="bootstrap resamples of episodes for the confidence intervals (0: none)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the classifier and bootstrap")
    ap.add_argument("--true-p", default=None, metavar="FILE",
                    help='JSON lines {"stamp_ns": tick stamp, "p": true p(nu=1|s)} from a '
                         "simulated person: adds the oracle and MILE's error against the truth")
    ap.add_argument("--onset-horizon", type=int, default=HORIZON, metavar="TICKS",
                    help="time-to-onset error: a predicted onset (p >= 0.5) may come up to this "
                         f"many ticks after the observed one (default: {HORIZON})")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = _main(args)
    except (EvalError, ValueError, OSError) as e:    # OSError: e.g. --out not writable
        print(f"mile-ros eval-interventions: error: {e}", file=sys.stderr)
        return 2
    print(format_table(report))
    print(f"\nreport: {Path(args.out) / 'report.json'}; plots: "
          + ", ".join(Path(p).name for p in report["plots"]))
    return 0


def _main(args) -> dict:
    import torch

    if args.bootstrap < 0:
        raise EvalError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    if args.onset_horizon < 0:
        raise EvalError(f"--onset-horizon must be >= 0 ticks, got {args.onset_horizon}")
    try:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EvalError(f"--out {args.out}: cannot create the report directory "
                        f"({e.strerror or e})") from None
    torch.set_num_threads(min(4, torch.get_num_threads()))
    model = _load_mile_model(args.model)
    images = getattr(model.obs_spec, "image_shape", None) is not None
    eval_data = load_bags(args.bags, "--bags", only=True, images=images)
    names = list(eval_data[0].state_names)
    eval_eps = episode_dicts(eval_data, names, "--bags", model, f"the checkpoint {args.model}")
    train_eps = _train_episodes(args.train_bags, eval_data, names) if args.train_bags else None
    true_p = read_true_p(Path(args.true_p), eval_eps) if args.true_p else None
    inputs = {"model": args.model, "bags": args.bags, "train_bags": args.train_bags,
              "true_p": args.true_p, "seed": args.seed, "onset_horizon": args.onset_horizon}
    return run(model, eval_eps, train_eps, true_p, args.bootstrap, args.seed, Path(args.out),
               progress=sys.stderr.isatty(), inputs=inputs, horizon=args.onset_horizon)


def _load_mile_model(path: str):
    model = load_model(path)
    if getattr(model, "c", None) is None:
        raise EvalError(f"--model {path}: the checkpoint has no intervention cost c (a "
                        "behaviour-cloning policy?): evaluate a MILE checkpoint")
    return model


def _train_episodes(dirs: list[str], eval_data: list, names: list[str]) -> list[dict]:
    """Load the --train-bags episodes: none of them among the evaluation bags, the same state."""
    train_data = load_bags(dirs, "--train-bags", only=False, images=False)
    overlap = {str(e.path.resolve()) for e in train_data} & {str(e.path.resolve())
                                                           for e in eval_data}
    if overlap:
        raise EvalError(f"--train-bags and --bags share {len(overlap)} episode(s), e.g. "
                        f"{sorted(overlap)[0]}: train the classifier on other episodes")
    if sorted(train_data[0].state_names) != sorted(names):
        raise EvalError(f"--train-bags: state {list(train_data[0].state_names)} "
                        f"({train_data[0].path}) differs from the --bags state {names}")
    return episode_dicts(train_data, names, "--train-bags")


if __name__ == "__main__":
    sys.exit(main())
