"""`mile-ros demo`: the whole collect -> train -> hot-swap loop on the simulated WidowX.

    mile-ros demo [--iterations N] [--episodes K] [--out runs/demo] [--image]

Iteration 0 is the initial policy (BC on a few noisy demonstrations, the one the simulated person's
mental model was fitted to). Then, N times:
  1. collect K episodes with the simulated graph (`mile-ros collect` machinery: recorder, arbiter,
     sim_human and the simulated arm, lockstep -- faster than real time), bags -> <out>/iter<i>;
  2. train MILE on all bags so far (the `train` node's code), warm-started from the last
     checkpoint, checkpoint -> <out>/checkpoints;
  3. hand the checkpoint to the policy server over ROS; it swaps at the next episode start (the
     policy server runs for the whole demo; the next iteration's bags record the swapped-in id);
     the next iteration's simulated person gets it as `mental_checkpoint` (its belief about the
     robot with `--mental-model policy`);
  4. evaluate the new policy alone (no person) on fixed-seed episodes, ROS-free;
  5. with `--compare hg-dagger` (any baseline of mile_ros.learning.baselines), train that
     baseline on the same bags and evaluate it on the same episodes (tools/demo_compare.py).
`--image`: the policy sees the camera frame (64 px) and the end-effector position, the paper's
real-robot observation: the sim camera runs in the graph, the bags hold its frames, the trainer
trains image policies (`train --image`), the initial policy is the image counterpart of the
state one (mile_ros.sim.initial.image_initial_policy) and evaluation renders the frames.
Prints a table per iteration and writes <out>/demo.json and <out>/demo.png at the end.
Ctrl-C stops the graph cleanly and still writes what was measured so far.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mile_ros._io import atomic_write
from mile_ros.learning.observations import DEFAULT_IMAGE_SIZE
from mile_ros.params import MENTAL_MODELS, ConfigError
from mile_ros.runs import iteration_name
from mile_ros.tools import collect
from mile_ros.tools.demo_compare import NAMES as COMPARE_NAMES
from mile_ros.tools.demo_compare import check_names
from mile_ros.tools.demo_graph import DemoGraph, collect_all, recorded_policies, robot_names, say

DEFAULT_ITERATIONS = 6
DEFAULT_EPISODES = 8
DEFAULT_EVAL_EPISODES = 20
DEFAULT_INTERVENTION_RATE = 0.3   # the simulated person's target (the paper keeps it under 30%)
# MILE options for the demo's small data (a few thousand ticks): a fixed budget of updates
# instead of the core's early stopping on held-out blocks, and a larger step. With the core's
# defaults the measured runs stopped after a few hundred updates and stayed at 0% success.
# policy_anchor 0.1 (MileConfig; the paper: 0): at iteration 6 10/20/40% against the paper's
# loss 0/40/5% on demo seeds 0/1/2 (README "The demo"). nll_beta 0.5 (beta-NLL, the paper: 0, the
# plain NLL): at iteration 6 MILE 40/30/0% against 10/0/0%, HG-DAgger 0/85/0% against 0/45/0%,
# demo seeds 0/1/2 side by side (bench/results/demo/nll_beta*_seed*.json)
TRAINING = {"lr": 1e-3, "holdout": 0.0, "epochs": 200.0, "max_updates": 3000,
            "policy_anchor": 0.1, "nll_beta": 0.5, "ema": 0.999}
TRAIN_FROM = ("latest", "initial")  # --train-from: MILE's warm start every iteration
EVAL_SEED_BASE = 9_000_000        # evaluation episodes; collection seeds stay far below
IMAGE_SIZE = DEFAULT_IMAGE_SIZE   # --image: the camera's and the policy's frame size, px


@dataclass
class Row:
    iteration: int
    policy: str                  # checkpoint id evaluated
    success: float               # success rate without the person
    eval_episodes: int
    collected_with: str = ""     # policy id(s) that ran while this iteration's data was recorded
    episodes: int = 0
    ticks: int = 0
    interventions: int = 0
    collection_success: float | None = None
    train_s: float = 0.0
    collect_s: float = 0.0
    eval_s: float = 0.0
    swap: str = ""               # the policy server's answer to the delivery
    compare: dict = field(default_factory=dict)   # baseline -> its success alone (--compare)
    compare_train_s: float = 0.0
    robots: dict = field(default_factory=dict)    # --robots N: robot -> its own figures

    @property
    def intervention_rate(self) -> float | None:
        return self.interventions / self.ticks if self.ticks else None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mile-ros demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS,
                    help=f"collect -> train -> swap rounds (default {DEFAULT_ITERATIONS})")
    ap.add_argument("--episodes", type=int, default=DEFAULT_EPISODES,
                    help=f"episodes collected per iteration (default {DEFAULT_EPISODES})")
    ap.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    ap.add_argument("--eval-episodes", type=int, default=DEFAULT_EVAL_EPISODES,
                    help="fixed-seed episodes of the policy alone per evaluation "
                         f"(default {DEFAULT_EVAL_EPISODES})")
    ap.add_argument("--seed", type=int, default=0,
                    help="seeds the person, the initial policy and training")
    ap.add_argument("--epochs-scale", type=float, default=1.0, help="training budget multiplier")
    ap.add_argument("--episode-timeout", type=float, default=None, metavar="S",
                    help="episode length limit of the simulated arm (default: its YAML value)")
    ap.add_argument("--intervention-rate", type=float, default=DEFAULT_INTERVENTION_RATE,
                    metavar="RATE", help="the simulated person's target intervention rate "
                    f"(sim_human target_rate; default {DEFAULT_INTERVENTION_RATE})")
    ap.add_argument("--mental-model", choices=MENTAL_MODELS, default=None,
                    help="the simulated person's belief about the robot (sim_human "
                         "mental_model): initial = BC on the initial policy's rollouts, fixed; "
                         "policy = the checkpoint the robot runs this iteration "
                         "(default: the parameter files' value)")
    ap.add_argument("--robot-name", default="demo", help="ROS namespace of the graph")
    ap.add_argument("--robots", type=int, default=1, metavar="N",
                    help="N simulated robots side by side (namespaces r1..rN, each its own "
                         "graph and person; one trainer on every robot's bags; default 1)")
    ap.add_argument("--params", help="parameter file overriding config/collect.yaml")
    ap.add_argument("--force", action="store_true",
                    help="delete an earlier run in --out (default: move it aside)")
    ap.add_argument("--compare", nargs="+", default=[], metavar="BASELINE",
                    help="also train these baselines on the same bags every iteration and "
                         f"evaluate them on the same episodes ({', '.join(COMPARE_NAMES)})")
    ap.add_argument("--image", action="store_true",
                    help=f"image policy: camera frame ({IMAGE_SIZE} px) + end-effector position "
                         "(the sim camera runs and is recorded; 'patch' encoder)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="a MILE training option over the demo's (mile_ros.learning.MileConfig; "
                         "e.g. --set nll_beta=0 for the paper's NLL); repeatable; the baselines "
                         "of --compare train with the same")
    ap.add_argument("--train-from", choices=TRAIN_FROM, default="initial",
                    help="MILE's start every iteration: initial (default) = the initial policy, "
                         "trained on all bags (the rule of every --compare baseline); latest = "
                         "the checkpoint it delivered last, trained on the new bags' worth of "
                         "ticks (the train node's default)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    return ap


def check_args(args) -> None:
    for name in ("iterations", "episodes", "eval_episodes", "robots"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, "
                              f"got {getattr(args, name)}")
    if not args.epochs_scale > 0:
        raise ConfigError(f"--epochs-scale must be > 0, got {args.epochs_scale}")
    if args.episode_timeout is not None and not args.episode_timeout > 0:
        raise ConfigError(f"--episode-timeout must be > 0, got {args.episode_timeout}")
    if not 0.0 < args.intervention_rate < 1.0:
        raise ConfigError(f"--intervention-rate must be in (0, 1), got {args.intervention_rate}")
    try:
        args.compare = check_names(args.compare)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if args.params and not Path(args.params).is_file():
        raise ConfigError(f"--params: parameter file not found: {args.params}")
    args.training = training_settings(args.set, args.seed, args.epochs_scale)
    name = args.robot_name.strip("/")
    if not name or not all(c.isalnum() or c == "_" for c in name) or name[0].isdigit():
        raise ConfigError(f"--robot-name {args.robot_name!r} is not a valid ROS namespace")


def training_settings(items: list[str], seed: int, epochs_scale: float) -> dict:
    """Return TRAINING with the `--set NAME=VALUE` items over it; a bad one is a ConfigError."""
    from mile_ros.learning import MileConfig
    from mile_ros.tools import train as trainer

    try:
        settings = {**TRAINING, **trainer.parse_settings(items)}
        trainer.scaled_config(MileConfig, seed, epochs_scale, None, settings)
    except trainer.TrainInputError as e:
        raise ConfigError(f"--set: {e}") from None
    return settings


def prepare_out(out: Path, force: bool) -> str | None:
    """Prepare an empty run directory.

    An earlier run there is moved aside (deleted with --force); returns a note saying so.
    """
    note = None
    if out.exists() and any(out.iterdir()):
        if force:
            shutil.rmtree(out)
            note = f"deleted the earlier run in {out} (--force)"
        else:
            aside = out.with_name(f"{out.name}.{time.strftime('%Y%m%dT%H%M%S')}")
            try:
                out.rename(aside)
            except OSError as e:
                raise ConfigError(f"--out {out} holds an earlier run that cannot be moved aside "
                                  f"({e.strerror}); choose another --out or add --force") from None
            note = f"moved the earlier run in {out} to {aside}"
    try:
        (out / "logs").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out: cannot create {out}: {e.strerror}") from None
    return note


# --- evaluation (ROS-free) -----------------------------------------------------------------------
TASK_PARAMS = ("control_rate_hz", "max_ee_step_m", "workspace_min_m", "workspace_max_m",
               "episode_timeout_s")


def task_options(arm_params: dict) -> dict:
    """WidowXTask keyword arguments from the arm node's parameters (evaluation = collection)."""
    return {k: arm_params[k] for k in TASK_PARAMS if k in arm_params}


def evaluate(policy, n_episodes: int, seed_base: int = EVAL_SEED_BASE, progress=None,
             task_kwargs: dict | None = None) -> dict:
    """Evaluate a policy_server.LoadedPolicy alone on fixed-seed simulated episodes.

    Its success rate, with the same runner the policy server uses (frame history reset per
    episode).
    """
    import numpy as np

    from mile_ros.sim.widowx import WidowXTask

    t0 = time.perf_counter()
    task = WidowXTask(seed=seed_base, **(task_kwargs or {}))
    runner = policy.make_runner()
    image_hw = policy.image_shape
    successes, ticks = [], []
    try:
        for i in range(n_episodes):
            obs, _ = task.reset(seed=seed_base + i)
            runner.reset()
            index = [task.observation_names.index(n) for n in policy.state_names]
            ok, t = False, 0
            for t in range(1, task.max_episode_steps + 1):
                image = task.render(image_hw[1], image_hw[0]) if policy.uses_image else None
                a = np.clip(np.nan_to_num(np.asarray(runner.step(obs[index], image), float)),
                            -1, 1)
                obs, _, terminated, truncated, info = task.step(a)
                if terminated or truncated:
                    ok = bool(info.get("success", False))
                    break
            successes.append(ok)
            ticks.append(t)
            if progress is not None:
                progress.update(1)
    finally:
        task.close()
    return {"success_rate": float(np.mean(successes)), "successes": int(np.sum(successes)),
            "episodes": n_episodes, "mean_ticks": float(np.mean(ticks)),
            "seconds": time.perf_counter() - t0}


def load_policy(path: Path):
    from mile_ros.policy.serving import load_policy_dir

    return load_policy_dir(path, deterministic=True)


# --- output --------------------------------------------------------------------------------------
HEADER = (f"{'iter':>4}  {'policy (checkpoint id)':<28}  {'success alone':>13}  "
          f"{'collected with':>14}  {'episodes':>8}  {'ticks':>6}  {'interventions':>13}  "
          f"{'train s':>7}")


def header(compare: list[str] = ()) -> str:
    """Return the table header, with one column per --compare baseline."""
    return HEADER + "".join(f"  {_short(n, 10):>10}" for n in compare)


def format_row(r: Row, rows: list[Row] = ()) -> str:
    """One table line; `collected with` names the policy that ran by its iteration."""
    by_id = {x.policy: f"iter {x.iteration}" for x in rows}
    used = ",".join(by_id.get(i, _short(i, 14)) for i in r.collected_with.split(",")) \
        if r.collected_with else "-"
    rate = f"{r.intervention_rate:.1%}" if r.intervention_rate is not None else "-"
    success = f"{r.success:.0%} ({round(r.success * r.eval_episodes)}/{r.eval_episodes})"
    train_s = f"{r.train_s:.1f}" if r.iteration else "-"
    return (f"{r.iteration:>4}  {_short(r.policy, 28):<28}  {success:>13}  {used:>14}  "
            f"{r.episodes or '-':>8}  {r.ticks or '-':>6}  {rate:>13}  {train_s:>7}"
            + "".join(f"  {v:>10.0%}" for v in r.compare.values()))


def _short(s: str, n: int = 34) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def write_results(out: Path, rows: list[Row], args, complete: bool, started: float) -> Path:
    data = {"complete": complete, "wall_s": time.monotonic() - started,
            "settings": dict(vars(args)),
            "rows": [{**asdict(r), "intervention_rate": r.intervention_rate} for r in rows]}
    path = out / "demo.json"
    return atomic_write(path, json.dumps(data, indent=1, default=str))


def plot(rows: list[Row], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    its = [r.iteration for r in rows]
    success = [r.success for r in rows]
    stderr = [(p * (1 - p) / max(r.eval_episodes, 1)) ** 0.5 for p, r in zip(success, rows)]
    ax.errorbar(its, success, yerr=stderr, fmt="o-", capsize=3,
                label=f"MILE: success alone ({rows[0].eval_episodes} fixed seeds, ±1 s.e.)")
    for name in rows[0].compare:
        done = [r for r in rows if name in r.compare]
        ax.plot([r.iteration for r in done], [r.compare[name] for r in done], "^:",
                label=f"{name} on the same bags: success alone")
    coll = [(r.iteration, r.intervention_rate) for r in rows if r.intervention_rate is not None]
    if coll:
        ax.plot([c[0] for c in coll], [c[1] for c in coll], "s--",
                label="intervention rate while collecting")
    ax.set_xlabel("iteration (0 = initial policy)")
    ax.set_ylabel("rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks(its)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    ax.set_title("MILE on the simulated WidowX (block through the hole)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    out = Path(args.out)
    note = prepare_out(out, args.force)
    if note:
        say(f"mile-ros demo: {note}")
    started = time.monotonic()
    rows: list[Row] = []
    graphs = [DemoGraph(args, out, name, i) for i, name in enumerate(robot_names(args))]
    task_kwargs = task_options(graphs[0].values(1)["arm"])   # validates the parameters, too
    sender = None
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    complete, status = False, 0
    try:
        import torch

        torch.set_num_threads(1)
        from mile_ros.policy.delivery import CheckpointSender

        on = f" on {len(graphs)} robots" if len(graphs) > 1 else ""
        what = f"image ({IMAGE_SIZE} px) + end-effector" if args.image else "state"
        say(f"mile-ros demo: {args.iterations} iterations x {args.episodes} episodes{on}, "
            f"{args.eval_episodes} evaluation episodes each, {what} policy -> {out}")
        collect.prepare_sim_person(graphs[0].values(1), lambda m: say(f"mile-ros demo: {m}"))
        initial = initial_checkpoint(out / "checkpoints", args.seed, image_size(args))
        for graph in graphs:
            graph.initial = initial
            graph.start_server()          # loads the initial policy while we evaluate it
        rows.append(evaluated(Row(0, "", 0.0, args.eval_episodes), initial, args, task_kwargs))
        rows[0].compare = dict.fromkeys(args.compare, rows[0].success)   # all start here
        say(header(args.compare))
        say(format_row(rows[-1], rows))
        sender = CheckpointSender([g.robot_name for g in graphs])
        for it in range(1, args.iterations + 1):
            rows.append(run_iteration(it, graphs, sender, args, task_kwargs))
            say(format_row(rows[-1], rows))
            for line in robot_lines(rows[-1], rows):
                say(line)
        complete = True
    except KeyboardInterrupt:
        say("mile-ros demo: interrupted; stopping the graph")
        status = 130
    except (RuntimeError, ValueError) as e:
        say(f"mile-ros demo: {e}")
        status = 1
    finally:
        if sender is not None:
            sender.close()
        for graph in graphs:
            graph.stop()
        signal.signal(signal.SIGTERM, old_term)
    if rows:
        summarise(rows, out, args, complete, started)
    return status


def train_start(checkpoints: Path, args) -> tuple[str, str]:
    """`run_training`'s (init, epochs_over) for `--train-from`."""
    if args.train_from == "initial":
        return str(checkpoints / "iter0-initial"), "all"
    return "latest", "new"


def run_iteration(it: int, graphs: list[DemoGraph], sender, args, task_kwargs: dict) -> Row:
    """Collect on every robot, train on all their bags, deliver to each, evaluate (compare)."""
    from mile_ros.learning.checkpoint import checkpoint_to_bytes
    from mile_ros.tools import train as trainer

    out, show = graphs[0].out, not args.no_progress and len(graphs) == 1
    t0 = time.monotonic()
    counts = collect_all(graphs, it, show)
    collect_s = time.monotonic() - t0
    bags = [g.bags / iteration_name(it) for g in graphs]
    init, over = train_start(out / "checkpoints", args)
    res = trainer.run_training(bags, out / "checkpoints", init=init, image=args.image,
                               image_size=image_size(args), seed=args.seed + it,
                               epochs_scale=args.epochs_scale, settings=args.training,
                               progress=show, say=lambda m: None, epochs_over=over)
    answers = sender.send_all(checkpoint_to_bytes(res.checkpoint), res.checkpoint_id, 60.0)
    refused = {r: a for r, a in answers.items() if not a.accepted}
    if refused:
        raise RuntimeError(f"the policy server(s) did not take {res.checkpoint_id}: " + "; ".join(
            f"{r}: {a.state} ({a.reason})" for r, a in refused.items()))
    for graph in graphs:      # the robots run it from the next episode on
        graph.running = res.checkpoint
    row = pooled_row(it, graphs, counts, args)
    row.train_s, row.collect_s = res.metrics["timings_s"]["train"], collect_s
    row.swap = ",".join(dict.fromkeys(a.state for a in answers.values()))
    return compared(evaluated(row, res.checkpoint, args, task_kwargs), bags, args, task_kwargs)


def pooled_row(it: int, graphs: list[DemoGraph], counts: list[dict], args) -> Row:
    """Pool iteration `it`'s figures over every robot; each robot's own go in `robots`."""
    recorded = [e for c in counts for e in c["recorded"]]
    per_robot = {g.robot_name: {"episodes": c["episodes"], "ticks": c["ticks"],
                                "interventions": c["interventions"],
                                "collection_success": c["success"],
                                "collected_with": recorded_policies(c["recorded"])}
                 for g, c in zip(graphs, counts)}
    return Row(it, "", 0.0, args.eval_episodes, collected_with=recorded_policies(recorded),
               episodes=len(recorded), ticks=sum(c["ticks"] for c in counts),
               interventions=sum(c["interventions"] for c in counts),
               collection_success=sum(bool(e.get("success")) for e in recorded) / len(recorded),
               robots=per_robot if len(graphs) > 1 else {})


def robot_lines(r: Row, rows: list[Row]) -> list[str]:
    """One line per robot under a row of a several-robot demo."""
    by_id = {x.policy: f"iter {x.iteration}" for x in rows}

    def used(ids: str) -> str:
        return ",".join(by_id.get(i, _short(i, 14)) for i in ids.split(","))
    return [f"{'':4}  {name:<28}  {'':>13}  {used(f['collected_with']):>14}  "
            f"{f['episodes']:>8}  {f['ticks']:>6}  "
            f"{f['interventions'] / max(f['ticks'], 1):>13.1%}" for name, f in r.robots.items()]


def summarise(rows: list[Row], out: Path, args, complete: bool, started: float) -> None:
    """Write demo.json and demo.png and print the whole table with a one-line summary."""
    write_results(out, rows, args, complete, started)
    png = plot(rows, out / "demo.png")
    say("")
    say(header(args.compare))
    for r in rows:
        say(format_row(r, rows))
        for line in robot_lines(r, rows):
            say(line)
    versus = "".join(f", {n} {v:.0%}" for n, v in rows[-1].compare.items())
    say(f"\nsuccess without the person: {rows[0].success:.0%} (initial policy) -> "
        f"{rows[-1].success:.0%} (iteration {rows[-1].iteration}{versus}); "
        f"{out / 'demo.json'}, {png}; {time.monotonic() - started:.0f} s")


def evaluated(row: Row, checkpoint: Path, args, task_kwargs: dict) -> Row:
    """`row` with the policy id and its success rate alone (no person) filled in."""
    policy = load_policy(checkpoint)
    bar = _bar(args, f"evaluate iter{row.iteration}")
    try:
        result = evaluate(policy, args.eval_episodes, progress=bar, task_kwargs=task_kwargs)
    finally:
        bar.close()
    row.policy, row.success, row.eval_s = policy.id, result["success_rate"], result["seconds"]
    return row


def compared(row: Row, bag_dirs: list[Path], args, task_kwargs: dict) -> Row:
    """`row` with every --compare baseline trained on the bags so far and evaluated."""
    from mile_ros.policy.serving import policy_from_model
    from mile_ros.tools.demo_compare import train_baseline

    for name in args.compare:
        t0 = time.perf_counter()
        model = train_baseline(name, bag_dirs, initial_model(args.seed, image_size(args)),
                               args.seed + row.iteration, args.epochs_scale, args.training)
        row.compare_train_s += time.perf_counter() - t0
        policy = policy_from_model(model, f"{name}:iter{row.iteration}")
        bar = _bar(args, f"evaluate {name} iter{row.iteration}")
        try:
            result = evaluate(policy, args.eval_episodes, progress=bar, task_kwargs=task_kwargs)
        finally:
            bar.close()
        row.compare[name] = result["success_rate"]
    return row


def _bar(args, desc: str):
    from tqdm import tqdm

    return tqdm(total=args.eval_episodes, desc=desc, unit="episode", disable=args.no_progress,
                leave=False, dynamic_ncols=True)


def _raise_interrupt(*_):
    raise KeyboardInterrupt


# --- iteration 0 ---------------------------------------------------------------------------------
def image_size(args) -> int | None:
    """Return the policy's frame size with --image, else None (a state policy)."""
    return IMAGE_SIZE if args.image else None


def initial_model(seed: int, image_size: int | None = None):
    """Return the simulated task's initial policy (mile_ros.sim.initial, cached): a MileModel.

    Trained by the robot trainer's BC (`train_bc`); its mental model is a copy of the policy (the
    paper's initial pihat). With `image_size`: its image + end-effector counterpart.
    """
    from mile_ros.sim.initial import widowx_initial_policy

    model, _names, _actions, _cfg = widowx_initial_policy(seed, image_size)
    return model


def initial_checkpoint(root: Path, seed: int, image_size: int | None = None) -> Path:
    """Save the initial policy as checkpoint `<root>/iter0-initial` (also `latest`)."""
    from mile_ros.learning.checkpoint import save_checkpoint, update_latest

    path = root / "iter0-initial"
    save_checkpoint(initial_model(seed, image_size), path,
                    extra_manifest={"source": "mile_ros.sim.initial initial policy",
                                    "seed": seed, "image_size": image_size})
    update_latest(root, path)
    return path


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigError as e:
        print(f"mile-ros demo: configuration error: {e}", file=sys.stderr)
        sys.exit(2)
