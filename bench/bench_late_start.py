"""A policy server started after the delivery: process start -> the newest checkpoint active.

The issue-15 target: a policy server started after the delivery runs the newest checkpoint
within 2 s of its start (README "Fleet"). This bench trains two small state-policy checkpoints
A and B (B newest, `latest`), starts a signed `checkpoint_store` process on their root and waits
until it offers B, then starts `mile_ros.nodes.policy_server` as a fresh process --starts times,
each configured with A (as a station that was off during training), and waits until it
announces B active on its policy/active (a listener in this process, as test/test_fleet.py
does); then stops it. Per start, from the process spawn (this process's clock; the server's log
stamps are the same system clock):

    node      its node exists (first log line: which checkpoints it accepts): imports, rcl init
    up        "active policy A" logged: A loaded, its publishers and subscriptions made
    received  B arrived (the "pending" answer's arrival less its "validated in X s")
    active    B announced active (the listener)

and node up -> active (the figure the README gave before). For context, in the same run, in
--import-runs fresh interpreters each: `python -c "import torch"` (likewise `import rclpy` and
`import mile_ros.nodes.policy_server`), the process's wall time -- which includes the exit and
torch's teardown, which a server does not wait for before it runs -- the import alone, and
spawn -> imported.

    python bench/bench_late_start.py [--starts 5] [--out bench/results/late_start.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "test"))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

from support.ros_graph import (  # noqa: E402
    Watcher,
    latest_of,
    log_stamp,
    start_server,
    start_store,
    stop,
)

RESULTS = ROOT / "bench" / "results" / "late_start.json"
ROBOT = "late"
TARGET_S = 2.0
IMPORTS = {"torch": "import torch", "rclpy": "import rclpy, rclpy.node",
           "policy_server": "import mile_ros.nodes.policy_server"}


def say(msg: str) -> None:
    print(msg, flush=True)


def stats(values) -> dict:
    v = [float(x) for x in values if x is not None]
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)} \
        if v else {}


def make_checkpoints(tmp: Path) -> dict:
    """Train A, then B (newest, `latest`) on one simulated episode; return their dirs and ids."""
    import torch

    from mile_ros.learning.checkpoint import checkpoint_to_bytes, verify_checkpoint
    from mile_ros.tools import train
    from support.train_helpers import simulate_episode, write_external_bag

    torch.set_num_threads(1)
    bags = tmp / "run" / "iter1"
    write_external_bag(bags / "ep0", simulate_episode(seed=5, max_ticks=40))
    root = tmp / "run" / "checkpoints"
    dirs = []
    for seed in (0, 1):
        code = train.main(["--bags", str(bags), "--seed", str(seed), "--no-deliver",
                           "--epochs-scale", "0.05", "--no-progress"])
        if code != 0:
            raise SystemExit(f"train failed ({code})")
        dirs.append(latest_of(root))
    a_dir, b_dir = dirs
    return {"root": root, "a_dir": a_dir, "b_dir": b_dir, "a_id": verify_checkpoint(a_dir)["id"],
            "b_id": verify_checkpoint(b_dir)["id"], "bytes": len(checkpoint_to_bytes(b_dir))}


def time_imports(runs: int) -> dict:
    """Time each of IMPORTS in `runs` fresh interpreters.

    Returns {name: {process_s, import_s, spawn_to_imported_s}: [seconds]}: the process's wall
    time (`python -c "import torch"`, which includes the interpreter's exit and its teardown of
    torch), the import statement alone (timed inside), and spawn -> imported.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = {name: {"process_s": [], "import_s": [], "spawn_to_imported_s": []} for name in IMPORTS}
    for _ in range(runs):
        for name, stmt in IMPORTS.items():
            code = f"import time; t0 = time.time(); {stmt}; print(t0, time.time())"
            wall0, t0 = time.time(), time.perf_counter()
            r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                               capture_output=True, text=True)
            took = time.perf_counter() - t0
            start, end = (float(x) for x in r.stdout.split())
            row = out[name]
            row["process_s"].append(took)
            row["import_s"].append(end - start)
            row["spawn_to_imported_s"].append(end - wall0)
    return out


def validated_s(answer: dict) -> float | None:
    """Return X of a "validated in X s" answer, else None."""
    reason = answer.get("reason", "")
    if "validated in " not in reason:
        return None
    return float(reason.split("validated in ", 1)[1].split(" s", 1)[0])


def one_start(tmp: Path, k: int, ck: dict, key_file: Path, watcher, timeout: float) -> dict:
    """Start one policy server configured with A; return its stages (s from the spawn)."""
    home = tmp / f"start{k}"
    home.mkdir()
    b_id = ck["b_id"]
    wall0, mono0 = time.time(), time.monotonic()
    proc = start_server(home, ROBOT, ck["a_dir"], key_file=key_file)
    try:
        pending_at, pending = watcher.wait_for(
            ROBOT, lambda a: a["state"] == "pending" and a["id"] == b_id, since=mono0,
            timeout=timeout, what="B pending")
        active_at, _ = watcher.wait_for(
            ROBOT, lambda a: a["state"] == "active" and a["id"] == b_id, since=mono0,
            timeout=timeout, what="B active")
    finally:
        stop(proc)
    log = proc.log
    node = log_stamp(log, "policy_server: accepts checkpoints") - wall0
    up = log_stamp(log, "policy_server: active policy") - wall0
    logged = log_stamp(log, f"checkpoint {b_id} active from the first episode") - wall0
    check = validated_s(pending)
    active = active_at - mono0
    return {"start": k, "spawn_to_node_s": node, "spawn_to_up_s": up,
            "spawn_to_received_s": (pending_at - mono0 - check) if check is not None else None,
            "validate_s": check, "spawn_to_pending_s": pending_at - mono0,
            "spawn_to_active_s": active, "spawn_to_active_logged_s": logged,
            "up_to_active_s": active - up, "exit_code": proc.returncode}


def bench(tmp: Path, args) -> dict:
    ck = make_checkpoints(tmp)
    say(f"checkpoints: A {ck['a_id']}, B {ck['b_id']} ({ck['bytes'] / 1e6:.2f} MB), latest = B")
    key_file = tmp / "fleet.key"
    key_file.write_text(secrets.token_hex(32) + "\n")
    key_file.chmod(0o600)
    watcher = Watcher([ROBOT])
    t0 = time.monotonic()
    store = start_store(tmp, "store_bench", [ROBOT], ck["root"], key_file)
    store_s = time.monotonic() - t0
    say(f"store offering B after {store_s:.2f} s")
    rows = []
    try:
        for k in range(args.starts):
            time.sleep(args.pause_s)
            row = one_start(tmp, k, ck, key_file, watcher, args.timeout)
            rows.append(row)
            say(f"  start {k}: spawn -> node {row['spawn_to_node_s']:.2f} s, up "
                f"{row['spawn_to_up_s']:.2f} s, B received {row['spawn_to_received_s']:.2f} s "
                f"(validated in {row['validate_s']:.2f} s), B active "
                f"{row['spawn_to_active_s']:.2f} s; up -> active {row['up_to_active_s']:.2f} s")
    finally:
        stop(store)
        watcher.close()
    keys = [k for k in rows[0] if k.endswith("_s")]
    return {"checkpoint_bytes": ck["bytes"], "store_start_to_offer_s": store_s, "starts": rows,
            "summary": {k: stats(r[k] for r in rows) for k in keys}}


def machine() -> dict:
    import torch

    return {"cpus": os.cpu_count(), "loadavg_start": list(os.getloadavg()),
            "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(),
            "rmw": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp (default)"),
            "ros_domain_id": int(os.environ["ROS_DOMAIN_ID"]),
            "discovery_range": os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE")}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"results JSON (default {RESULTS})")
    ap.add_argument("--starts", type=int, default=5, help="policy server starts (default 5)")
    ap.add_argument("--import-runs", type=int, default=3,
                    help="fresh interpreters per timed import (default 3)")
    ap.add_argument("--pause-s", type=float, default=1.0,
                    help="idle time before each start (default 1 s)")
    ap.add_argument("--timeout", type=float, default=120.0, help="per start (default 120 s)")
    ap.add_argument("--domain-id", type=int, default=None,
                    help="ROS_DOMAIN_ID (default: a random one in 1..100 for this run)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:   # `cmd &`: the servers would ignore
        signal.signal(signal.SIGINT, signal.default_int_handler)    # the Ctrl-C that stops them
    domain = args.domain_id if args.domain_id is not None else \
        random.SystemRandom().randint(1, 100)
    os.environ["ROS_DOMAIN_ID"] = str(domain)     # before any context: ours and the children's
    res = {"machine": machine(), "settings": {k: str(v) if isinstance(v, Path) else v
                                              for k, v in vars(args).items()},
           "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench_late_start_") as d:
        res["late_start"] = bench(Path(d), args)
    res["imports_s"] = time_imports(args.import_runs)
    res["machine"]["loadavg_end"] = list(os.getloadavg())
    res["wall_s"] = time.monotonic() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    report(res)
    say(f"-> {args.out}")
    return 0


def report(res: dict) -> None:
    s, m = res["late_start"]["summary"], res["machine"]
    say(f"\nlate start, {len(res['late_start']['starts'])} starts "
        f"({res['late_start']['checkpoint_bytes'] / 1e6:.2f} MB signed checkpoint): "
        "median (min .. max) s from the process spawn")
    for k, label in (("spawn_to_node_s", "node exists"), ("spawn_to_up_s", "node up (A)"),
                     ("spawn_to_received_s", "B received"), ("validate_s", "B validated in"),
                     ("spawn_to_active_s", "B active"), ("up_to_active_s", "node up -> active")):
        v = s[k]
        say(f"  {label:<18} {v['median']:6.2f} ({v['min']:.2f} .. {v['max']:.2f})")
    say("  fresh interpreters, median s: process wall (python -c ...) / import alone / "
        "spawn -> imported")
    for n, v in res["imports_s"].items():
        say(f"    {n:<14} " + " / ".join(f"{statistics.median(v[k]):.2f}" for k in (
            "process_s", "import_s", "spawn_to_imported_s")))
    verdict = "met" if s["spawn_to_active_s"]["median"] <= TARGET_S else "NOT met"
    say(f"  target {TARGET_S:g} s (median spawn -> active): {verdict}; max "
        f"{s['spawn_to_active_s']['max']:.2f} s")
    say(f"{res['wall_s']:.0f} s in all; load average {m['loadavg_start'][0]:.2f} -> "
        f"{m['loadavg_end'][0]:.2f} on {m['cpus']} cpus; ROS_DOMAIN_ID {m['ros_domain_id']}")


if __name__ == "__main__":
    sys.exit(main())
