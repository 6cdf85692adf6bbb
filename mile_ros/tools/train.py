"""The trainer's command line: episode bags -> MILE -> checkpoint -> the policy server, over ROS.

    ros2 run mile_ros train --bags runs/lab/iter3            (or: mile-ros train --bags ...)

1. Reads every episode bag under `--bags` (this package's recorder's, or a `ros2 bag record` of
   the same topics) and, unless `--only`, the earlier `iter*` directories beside them: MILE trains
   on all data collected so far. Reports ticks, interventions, episodes used and every bag skipped
   with its reason. A bad bag stops it with a message naming the file (`--skip-bad`: skip it).
2. Builds observations (mile_ros.learning.observations): the state stacked over 4 ticks, or with
   `--image` the camera frame plus the end-effector position.
3. Trains MILE (policy and mental model), warm-started from `--init` (default: the `latest`
   checkpoint under `--out`, when there is one and it fits the data). Warm-started, the epoch
   budget counts only the ticks of bags that checkpoint was not trained on (`--epochs-over new`,
   its manifest lists them): an iteration costs what its new data costs.
4. Writes the checkpoint atomically under `--out`, then `latest`, and beside it
   `<name>.metrics.json` (losses, predicted vs observed intervention rate, data counts, timings).
5. Sends the checkpoint's bytes on /<robot>/policy/checkpoint (reliable, transient local) of
   every robot named by `--robot-name` (default wx250s; several: `--robot-name r1 r2 r3`), signed
   with the key in `--key-file` (HMAC-SHA256 over those bytes; unsigned without it), and waits up
   to `--wait-ack` s for each policy server's answer on its policy/active: "pending" (validated;
   it runs from the next episode start), "active" (it already runs it) or "refused" (with the
   reason). One line per robot names it and its answer.

`--robot-name` also says whose topics to train on in a bag that holds several robots' (`ros2 bag
record -a` on a shared domain): with several names, each named robot's episodes in it.

Exit status: 0 trained (and accepted by every robot, unless --no-deliver), 1 refused by any
robot's policy server, 2 bad input (bags, arguments, --init), 4 trained and saved, none refused,
but some robot's policy server did not answer, 130 interrupted. A refusal outranks a missing
answer (mile_ros.policy.delivery.fleet_status).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mile_ros._io import atomic_write, to_json
from mile_ros.params import ConfigError
from mile_ros.policy.delivery import (  # noqa: F401
    EXIT_NO_ANSWER,
    EXIT_REFUSED,
    deliver,
    fleet_status,
    report_answer,
    report_answers,
)
from mile_ros.runs import checkpoints_dir, iteration_name, iteration_of

EXIT_INPUT, EXIT_INTERRUPTED = 2, 130
# Measured on 2 cores (bench/results/threads.json): 2 threads train the state policy 14% faster on
# an idle machine, but 2.6x slower beside one busy process (the ROS graph, another run).
TRAIN_THREADS = 1
EPOCHS_OVER = ("new", "all")   # --epochs-over: which ticks the warm-start budget counts
PROG = "train"


class TrainInputError(ValueError):
    """A problem with the trainer's inputs; the message names the file or argument."""


# --- arguments -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=PROG, description="Train MILE on episode bags and hand the checkpoint to the "
        "policy servers over ROS.", epilog="Exit status: 0 ok (every robot accepted), 1 "
        "refused by any robot's policy server, 2 bad input, 4 saved, none refused, but some "
        "robot's policy server did not answer, 130 interrupted.")
    ap.add_argument("--bags", nargs="+", required=True, metavar="DIR",
                    help="episode bags, directories of bags (iter3) or run directories")
    ap.add_argument("--only", action="store_true",
                    help="only the given directories "
                         "(default: also the earlier iter* beside them)")
    ap.add_argument("--out", metavar="CKPT_ROOT",
                    help="checkpoint root (default: <run dir>/checkpoints, the run dir being the "
                         "parent of the first --bags iter* directory)")
    ap.add_argument("--init", default="latest", metavar="CKPT|latest|none",
                    help="warm start: a checkpoint directory, 'latest' under --out (default; "
                         "from scratch when there is none), or 'none'")
    ap.add_argument("--image", action="store_true",
                    help="camera image + end-effector position instead of the stacked state")
    ap.add_argument("--image-size", type=int, default=None, metavar="PX",
                    help="--image: square frame size for the CNN (default 64; 32..128)")
    ap.add_argument("--skip-bad", action="store_true",
                    help="skip unreadable bags with a warning instead of stopping")
    ap.add_argument("--include-incomplete", action="store_true",
                    help="also use the readable part of bags cut short by a crash")
    ap.add_argument("--no-deliver", action="store_true", help="do not send it over ROS")
    ap.add_argument("--wait-ack", type=float, default=30.0, metavar="SECONDS",
                    help="wait this long for the policy server's answer (default 30)")
    ap.add_argument("--key-file", metavar="FILE",
                    help="sign the checkpoint with the key in FILE (HMAC-SHA256), the policy "
                         "servers' checkpoint_key_file; without it, it is sent unsigned")
    ap.add_argument("--robot-name", nargs="+", default=["wx250s"], metavar="NAME",
                    help="the robot(s): the ROS namespace of each policy server to deliver to "
                         "(several: to each, answers awaited together), and whose topics to "
                         "train on in a bag that holds several robots' (ros2 bag record -a on "
                         "a shared domain)")
    ap.add_argument("--device", default="cpu", metavar="cpu|cuda|cuda:N|auto",
                    help="where to train: cpu (default), cuda (a GPU; an error without one) or "
                         "auto (CUDA when torch sees a GPU, else the CPU); the checkpoint loads "
                         "on a CPU-only machine either way")
    ap.add_argument("--threads", type=int, default=TRAIN_THREADS,
                    help="torch intra-op threads (0: one per core); default 1, measured fastest "
                         "beside any other busy process (bench/bench_threads.py)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs-scale", type=float, default=1.0,
                    help="multiply the training budget (epochs for the data size) by this")
    ap.add_argument("--epochs-over", choices=EPOCHS_OVER, default="new",
                    help="warm start: the epoch budget counts the ticks of bags the --init "
                         "checkpoint was not trained on (new, default: an iteration costs what "
                         "its new data costs) or every tick (all)")
    ap.add_argument("--c", type=float, default=None,
                    help="intervention cost c (default: estimated from the data's rate)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="any other MILE training option (mile_ros.learning.MileConfig), e.g. "
                         "--set lr=1e-3 --set holdout=0; repeatable")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    return ap


def split_ros_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(own arguments, rclpy arguments): everything from `--ros-args` on goes to rclpy."""
    if "--ros-args" in argv:
        i = argv.index("--ros-args")
        return argv[:i], argv[i:]
    return argv, []


def check_ros_args(ros_args: list[str]) -> None:
    """Refuse malformed `--ros-args` (a ConfigError naming them) as the delivery would."""
    from mile_ros.nodes._runtime import open_context

    open_context(["train", *ros_args]).try_shutdown()


def check_args(args) -> None:
    if not args.wait_ack >= 0 or not math.isfinite(args.wait_ack):
        raise TrainInputError(f"--wait-ack must be a number of seconds >= 0, got {args.wait_ack}")
    if args.threads < 0:
        raise TrainInputError(f"--threads must be >= 0 (0: one per core), got {args.threads}")
    if not args.epochs_scale > 0 or not math.isfinite(args.epochs_scale):
        raise TrainInputError(f"--epochs-scale must be > 0, got {args.epochs_scale}")
    if args.image_size is not None and not 32 <= args.image_size <= 128:
        raise TrainInputError(f"--image-size must be in 32..128 px, got {args.image_size}")
    if args.image_size is not None and not args.image:
        raise TrainInputError("--image-size needs --image")
    check_device(args.device)
    for given in args.robot_name:
        name = given.strip("/")
        if not name or not all(c.isalnum() or c == "_" for c in name) or name[0].isdigit():
            raise TrainInputError(f"--robot-name {given!r} is not a valid ROS namespace")
    args.robot_name = list(dict.fromkeys(n.strip("/") for n in args.robot_name))


def check_device(device: str):
    """Return the torch device `--device` names; TrainInputError naming the option if unusable."""
    from mile_ros.learning.loop import resolve_device

    try:
        return resolve_device(device)
    except ValueError as e:
        raise TrainInputError(f"--device {device}: {e}; use --device cpu, or --device auto to "
                              "fall back to the CPU") from None


def device_note(asked: str, device) -> str:
    """Say where training runs and why (e.g. `auto` without a GPU)."""
    import torch

    if device.type == "cuda":
        return f"device: {device} ({torch.cuda.get_device_name(device)})"
    why = " (--device auto: no CUDA device available)" if asked.strip().lower() == "auto" else ""
    return f"device: cpu{why}"


def default_out(bags: list[str]) -> Path:
    """`runs/lab/iter3` -> `runs/lab/checkpoints`; any other directory D -> `D/checkpoints`."""
    return checkpoints_dir(bags[0])


def resolve_init(init: str, out: Path) -> Path | None:
    """Return the warm-start checkpoint directory, or None (train from scratch)."""
    from mile_ros.learning.checkpoint import LATEST, resolve_checkpoint

    if init == "none":
        return None
    if init == "latest":
        return resolve_checkpoint(out) if (out / LATEST).is_file() else None
    path = Path(init)
    if not path.is_dir():
        raise TrainInputError(f"--init {init}: no such checkpoint directory")
    return resolve_checkpoint(path)


# --- the work ------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    checkpoint: Path
    checkpoint_id: str
    metrics: dict
    report: dict = field(default_factory=dict)


def _say(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def load_data(bags, only=False, skip_bad=False, include_incomplete=False, image_size=None,
              progress=True, say=_say, robot=None):
    """(EpisodeData list, report) with the bag report printed; BagError on bad input.

    `robot`: a name, or several (load_episodes: whose topics to read in a shared-domain bag).
    """
    from mile_ros.bags import load_episodes

    size = (image_size, image_size) if image_size else None
    episodes, report = load_episodes(bags, only=only, skip_bad=skip_bad,
                                     include_incomplete=include_incomplete,
                                     images=image_size is not None, image_size=size,
                                     progress=progress, robot=robot)
    for path, reason in report["skipped"]:
        say(f"WARNING: skipped {path}: {reason}")
    for path, issues in report["issues"].items():
        say(f"note: {path}: {'; '.join(issues)}")
    for path in report["low_rate"]:
        say(f"note: {path} was recorded below the configured control rate")
    if not episodes:
        where = ", ".join(map(str, bags))
        raise TrainInputError(f"no usable episodes in {where} ({report['bags_found']} bags found, "
                              f"{len(report['skipped'])} skipped)")
    per_dir: dict[str, list[int]] = {}
    for e in episodes:
        counts = per_dir.setdefault(str(Path(e.path).parent), [0, 0, 0])
        counts[0], counts[1], counts[2] = counts[0] + 1, counts[1] + len(e), \
            counts[2] + e.interventions
    report["per_dir"] = {d: dict(zip(("episodes", "ticks", "interventions"), c))
                         for d, c in per_dir.items()}
    say(f"data: {report['episodes']} episodes, {report['ticks']} ticks, "
        f"{report['interventions']} interventions "
        f"({report['interventions'] / max(report['ticks'], 1):.1%}); "
        f"{len(report['skipped'])} bags skipped")
    for d, (n, ticks, nu) in per_dir.items():
        say(f"  {d}: {n} episodes, {ticks} ticks, {nu} interventions")
    return episodes, report


def checkpoint_name(report: dict) -> str:
    """`iter3-20260101T120000Z`: the newest iteration in the data, and the time."""
    from datetime import datetime, timezone

    iters = [n for n in (iteration_of(Path(p).parent) for p in report.get("used", []))
             if n is not None]
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{iteration_name(max(iters))}-{stamp}" if iters else f"mile-{stamp}"


def run_training(bags, out: Path | None = None, init: str = "latest", image: bool = False,
                 image_size: int | None = None, only: bool = False, skip_bad: bool = False,
                 include_incomplete: bool = False, seed: int = 0, epochs_scale: float = 1.0,
                 c: float | None = None, settings: dict | None = None, progress: bool = True,
                 say=_say, robot: str | list[str] | None = None,
                 device: str = "cpu", epochs_over: str = "new") -> TrainResult:
    """Turn bags into a trained, saved checkpoint (no ROS).

    Raises BagError / TrainInputError / CheckpointError / ObservationError (all ValueError) naming
    the file or argument.
    """
    from mile_ros.learning import MileConfig, train_mile
    from mile_ros.learning import observations as obs
    from mile_ros.learning.checkpoint import save_checkpoint, update_latest

    t0 = time.perf_counter()
    torch_device = check_device(device)
    bags = [str(b) for b in bags]
    out = Path(out) if out else default_out(bags)
    size = (image_size or obs.DEFAULT_IMAGE_SIZE) if image else None
    episodes, report = load_data(bags, only, skip_bad, include_incomplete, size, progress, say,
                                 robot)
    t_load = time.perf_counter() - t0

    obs_spec = policy_obs_spec(episodes[0].state_names, size, init, out)
    act_spec = obs.action_spec(episodes[0].action_names)
    arrays = obs.training_episodes(episodes, obs_spec)
    counts = obs.data_counts(arrays)

    init_path, init_model = warm_start(init, out, obs_spec, act_spec, say)
    say(device_note(device, torch_device))

    config = scaled_config(MileConfig, seed=seed, epochs_scale=epochs_scale, c=c,
                           settings=settings)
    budget = epoch_budget(episodes, init_path if init_model else None, epochs_over)
    config.epochs *= budget["fraction"]
    if budget["fraction"] < 1.0:
        say(f"warm start: the update budget counts the {budget['new_ticks']} new of "
            f"{budget['ticks']} ticks (--epochs-over new)")
    t1 = time.perf_counter()
    model, metrics = train_mile(arrays, obs_spec, act_spec, config, init=init_model,
                                progress=progress, device=torch_device)
    t_train = time.perf_counter() - t1

    fit = intervention_fit(model, arrays)
    out.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(report)
    summary = {"data": counts, "bags_used": len(report["used"]),
               "bags_skipped": len(report["skipped"]), "init": str(init_path) if init_model
               else None, "seed": seed, "epochs_scale": epochs_scale, "image": bool(image),
               "settings": settings or {}, "device": str(torch_device), "budget": budget,
               "trained_on": sorted(bag_identity(e.path) for e in episodes)}
    t2 = time.perf_counter()
    ckpt_id = save_checkpoint(model, out / name, extra_manifest={"training": summary})
    ckpt_dir = out / name
    update_latest(out, ckpt_dir)
    t_save = time.perf_counter() - t2

    full = {"checkpoint_id": ckpt_id, "checkpoint": str(ckpt_dir), **summary,
            "intervention_rate": fit, "c": _float(getattr(model, "c", None)),
            "beta": _float(getattr(model, "beta", None)),
            "training": to_json(metrics), "updates_total": updates_run(metrics),
            "ms_per_update": 1e3 * t_train / max(1, updates_run(metrics)),
            "timings_s": {"load": t_load, "train": t_train, "save": t_save,
                          "total": time.perf_counter() - t0},
            "bags": {"used": report["used"], "skipped": [list(s) for s in report["skipped"]],
                     "per_dir": report["per_dir"]}}
    _write_json(out / f"{name}.metrics.json", full)
    say(f"trained in {t_train:.1f} s: intervention rate observed {fit['observed']:.3f}, "
        f"predicted {fit['predicted']:.3f}; checkpoint {ckpt_id} -> {ckpt_dir}")
    return TrainResult(ckpt_dir, str(ckpt_id), full, report)


def bag_identity(path) -> str:
    """Return how a checkpoint remembers a bag it was trained on: the resolved path."""
    return str(Path(path).resolve())


def epoch_budget(episodes, init_path: Path | None, epochs_over: str) -> dict:
    """Return which ticks the epoch budget counts, and their fraction of all ticks.

    Warm-started from a checkpoint whose manifest lists the bags it was trained on
    (`trained_on`), epochs_over="new" counts only the ticks of the other bags: iteration k then
    costs what its new data costs, not what all k iterations' data cost. Without the list (an
    older checkpoint, bags moved) every tick counts, as with "all" or no warm start.
    """
    ticks = sum(len(e.nu) for e in episodes)
    seen = set(trained_on(init_path)) if init_path is not None and epochs_over == "new" else set()
    new = sum(len(e.nu) for e in episodes if bag_identity(e.path) not in seen)
    return {"epochs_over": epochs_over if seen else "all", "ticks": ticks, "new_ticks": new,
            "fraction": max(new, 1) / max(ticks, 1) if seen else 1.0}


def trained_on(checkpoint: Path) -> list[str]:
    """Return the bags a checkpoint's manifest says it was trained on ([] when it does not)."""
    from mile_ros.learning.checkpoint import verify_checkpoint

    training = verify_checkpoint(checkpoint).get("extra", {}).get("training", {})
    listed = training.get("trained_on") if isinstance(training, dict) else None
    return [str(b) for b in listed] if isinstance(listed, list) else []


def policy_obs_spec(recorded: list[str], image_size: int | None, init: str, out: Path):
    """Return the ObsSpec to train: a state policy reads what its warm start reads.

    The initial policy decides which named part of the recorded observation a state policy reads
    (the simulated WidowX's: widowx.POLICY_STATE_NAMES); without a warm start, or one that reads
    a name the bags lack, the whole recorded observation (warm_start then says why it does not
    warm-start). Image policies: learning.observations.obs_spec.
    """
    from mile_ros.learning import observations as obs
    from mile_ros.learning.checkpoint import verify_checkpoint
    from mile_ros.learning.specs import ObsSpec

    spec = obs.obs_spec(recorded, image_size)
    path = resolve_init(init, out) if image_size is None else None
    if path is None:
        return spec
    try:
        wanted = ObsSpec.from_dict(verify_checkpoint(path)["obs_spec"])
    except (ValueError, KeyError, TypeError):
        return spec
    usable = wanted.image_shape is None and set(wanted.state_names) <= set(recorded)
    return wanted if usable else spec


def warm_start(init: str, out: Path, obs_spec, act_spec, say=_say):
    """(checkpoint path, MileModel) to warm-start from, or (path or None, None): from scratch."""
    from mile_ros.learning.checkpoint import load_checkpoint

    init_path = resolve_init(init, out)
    init_model = None
    if init_path is not None:
        try:
            init_model = load_checkpoint(init_path, expect_obs_spec=obs_spec,
                                         expect_action_spec=act_spec)
            say(f"warm start from {init_path}")
        except ValueError as e:
            if init != "latest":
                raise TrainInputError(f"--init {init}: {e}") from None
            say(f"WARNING: not warm-starting from {init_path}: {e}; training from scratch")
    if init_model is None:
        say("training from scratch (no checkpoint to warm-start from)")
    elif getattr(init_model.policy.trunk.encoder, "kind", None) == "conv3":
        say("note: the warm start's image encoder is the older, slower 'conv3', and it is kept "
            "(--init none trains the faster 'patch' encoder from scratch)")
    return init_path, init_model


def parse_settings(items: list[str]) -> dict:
    """`--set NAME=VALUE` items -> {name: value} (values read as YAML: 1e-3, true, null, [..])."""
    from mile_ros.learning.config import parse_settings as parse

    try:
        return parse(items, "--set", exclude=("seed", "c"))
    except ValueError as e:
        raise TrainInputError(f"{e} (seed and c have their own options)") from None


def scaled_config(MileConfig, seed: int, epochs_scale: float, c: float | None,
                  settings: dict | None = None):
    """Return the core's MileConfig with the seed, c, `settings`, and a scaled update budget.

    The update budget is scaled by `epochs_scale`. A bad setting raises TrainInputError naming it.
    """
    try:
        config = MileConfig(seed=seed, c=c, **(settings or {}))
        config.validate()
    except (TypeError, ValueError) as e:
        raise TrainInputError(f"training options {settings}: {e}") from None
    config.epochs *= epochs_scale
    config.min_updates = max(1, round(config.min_updates * epochs_scale))
    config.max_updates = max(config.min_updates, round(config.max_updates * epochs_scale))
    config.pretrain_updates = round(config.pretrain_updates * min(epochs_scale, 1.0))
    return config


def updates_run(metrics: dict) -> int:
    """Gradient updates the core ran: BC pretraining, update-count selection, refit."""
    import re

    total = int(metrics.get("updates", 0) or 0)
    if metrics.get("refit_history") is not None and metrics.get("history"):
        total += int(metrics["history"][-1].get("update", 0))
    m = re.match(r"BC on a_r \((\d+) updates\)", str(metrics.get("warm_start", "")))
    return total + (int(m.group(1)) if m else 0)


def intervention_fit(model, arrays: list[dict]) -> dict:
    """Observed intervention rate vs the model's mean predicted p(nu=1|s) on the training data."""
    import numpy as np

    nu = np.concatenate([e["nu"] for e in arrays])
    out = {"observed": float(nu.mean()) if len(nu) else 0.0, "predicted": float("nan")}
    try:
        p = np.concatenate([model.intervention_probability(model_inputs(model, e))
                            for e in arrays])
        out["predicted"] = float(np.mean(p))
        out["predicted_on_interventions"] = float(p[nu].mean()) if nu.any() else None
        out["predicted_elsewhere"] = float(p[~nu].mean()) if (~nu).any() else None
    except Exception as e:  # noqa: BLE001 - a report, not a requirement
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def model_inputs(model, episode: dict):
    """Return the model's batched inputs for one episode dict (stacked state, or image + state)."""
    from mile_ros.learning import stack_frames

    spec = model.obs_spec
    state = stack_frames(episode["state"], spec.frame_stack) if spec.frame_stack > 1 \
        else episode["state"]
    if spec.image_shape is not None:
        return {"state": state, "image": episode["image"]}
    return state


def _float(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(to_json(data), indent=1))


def delivery_key(key_file: str | None) -> bytes | None:
    """Return the signing key in `--key-file` (None: none given); ConfigError names the file."""
    from mile_ros.policy.signing import loose_permissions, read_key

    if not key_file:
        return None
    key = read_key(key_file, "--key-file")
    warning = loose_permissions(key_file)
    if warning:
        _say(f"WARNING: {warning}")
    return key


# --- entry point ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, ros_args = split_ros_args(argv)
    args = build_parser().parse_args(own)
    try:
        check_args(args)
        robots = args.robot_name[0] if len(args.robot_name) == 1 else args.robot_name
        key = delivery_key(args.key_file)
        if not args.no_deliver:
            check_ros_args(ros_args)          # before training, not after it
        import torch

        from mile_ros.learning import MileConfig

        torch.set_num_threads(args.threads or os.cpu_count() or 1)
        settings = parse_settings(args.set)
        scaled_config(MileConfig, args.seed, args.epochs_scale, args.c, settings)  # check early
        result = run_training(args.bags, args.out, args.init, args.image, args.image_size,
                              args.only, args.skip_bad, args.include_incomplete, args.seed,
                              args.epochs_scale, args.c, settings,
                              progress=not args.no_progress, robot=robots,
                              device=args.device, epochs_over=args.epochs_over)
    except KeyboardInterrupt:
        _say("interrupted; nothing was written")
        return EXIT_INTERRUPTED
    except ConfigError as e:
        _say(f"configuration error: {e}")
        return EXIT_INPUT
    except ValueError as e:   # BagError, CheckpointError, ObservationError, TrainInputError, ...
        _say(f"error: {e}")
        return EXIT_INPUT
    except OSError as e:
        _say(f"error: {e.filename or ''}: {e.strerror or e}")
        return EXIT_INPUT
    if args.no_deliver:
        _say("not delivered (--no-deliver)")
        return 0
    try:
        answers = deliver(result.checkpoint, result.checkpoint_id, args.robot_name,
                          args.wait_ack, ros_args, key=key)
    except KeyboardInterrupt:
        _say(f"interrupted while delivering; the checkpoint is saved at {result.checkpoint}")
        return EXIT_INTERRUPTED
    except ConfigError as e:
        _say(f"configuration error: {e}; the checkpoint is saved at {result.checkpoint}")
        return EXIT_INPUT
    return report_answers(answers, result.checkpoint_id)


if __name__ == "__main__":
    sys.exit(main())
