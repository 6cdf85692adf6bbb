"""Time from SIGINT to exit, per node and for `mile-ros collect`, optionally with CPU burners.

Each run starts the simulated collection graph's nodes as separate processes in one namespace
(as `mile-ros collect` and `ros2 launch` do), lets the graph run for `--settle-s`, then sends
SIGINT to every node at once (what Ctrl-C in a terminal does) and measures, per process, the time
until it has exited, its exit status, and whether its stderr holds a traceback or rcl error.
Then it does the same for `mile-ros collect --sim` as a whole. `--burners N` runs N `yes`
processes beside it (a loaded 2-core machine).

    python bench/bench_shutdown.py [--runs 5] [--burners 2] [--settle-s 8] [--tree DIR]

`--tree` measures another source tree (e.g. an older checkout) with the same harness. Prints a
table and writes bench/results/shutdown.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
NODES = ["recorder", "arbiter", "policy_server", "sim_human", "arm"]
PROBLEMS = ("Traceback", "RCLError", "Failed to publish log message", "context is not valid")


def environment(tree: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "MUJOCO_GL": "egl", "PYTHONUNBUFFERED": "1"}
    env["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(101, 200))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return env


def params_file(tmp: Path, out: Path) -> Path:
    values = {"recorder": {"out": str(out), "iteration": 1, "record_images": False},
              "arbiter": {"joy_sync": True}, "arm": {"realtime_factor": 1.0}}
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump({f"/**/{n}": {"ros__parameters": v}
                                    for n, v in values.items()}))
    return path


def start_nodes(tree: Path, ns: str, params: Path, env: dict, logs: Path) -> dict:
    procs = {}
    for name in NODES:
        cmd = [sys.executable, "-m", f"mile_ros.nodes.{name}", "--ros-args", "-r",
               f"__ns:=/{ns}", "-r", f"__node:={name}", "--params-file", str(params)]
        log = open(logs / f"{name}.log", "w")
        procs[name] = (subprocess.Popen(cmd, cwd=tree, env=env, stdout=log,
                                        stderr=subprocess.STDOUT), log)
    return procs


def interrupt_all(procs: dict, timeout: float = 20.0) -> dict:
    """SIGINT every process at once; per process (seconds to exit, status)."""
    t0 = time.monotonic()
    for proc, _ in procs.values():
        proc.send_signal(signal.SIGINT)
    out = {}
    while len(out) < len(procs) and time.monotonic() - t0 < timeout:
        for name, (proc, _) in procs.items():
            if name not in out and proc.poll() is not None:
                out[name] = (time.monotonic() - t0, proc.returncode)
        time.sleep(0.01)
    for name, (proc, log) in procs.items():
        if name not in out:
            proc.kill()
            out[name] = (float("inf"), proc.wait())
        log.close()
    return out


def problems(log: Path) -> list[str]:
    text = log.read_text(errors="replace")
    return [p for p in PROBLEMS if p in text]


def one_graph_run(tree: Path, settle_s: float) -> dict:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        procs = start_nodes(tree, f"shut{os.getpid()}_{random.randrange(10**6)}",
                            params_file(tmp, tmp / "bags"), environment(tree), tmp)
        time.sleep(settle_s)
        early = {n: p.returncode for n, (p, _) in procs.items() if p.poll() is not None}
        times = interrupt_all(procs)
        return {n: {"exit_s": round(t, 3), "status": rc, "exited_early": n in early,
                    "problems": problems(tmp / f"{n}.log")} for n, (t, rc) in times.items()}


def one_collect_run(tree: Path, settle_s: float) -> dict:
    with tempfile.TemporaryDirectory() as d:
        log = open(Path(d) / "collect.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "mile_ros.cli", "collect", "--sim",
                                 "--out", str(Path(d) / "iter1"), "--no-progress"],
                                cwd=tree, env=environment(tree), stdout=log,
                                stderr=subprocess.STDOUT)
        time.sleep(settle_s)
        (t, rc), = interrupt_all({"collect": (proc, log)}, timeout=30.0).values()
        return {"exit_s": round(t, 3), "status": rc,
                "problems": problems(Path(d) / "collect.log")}


def burners(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(n)]


def summary(runs: list[dict]) -> dict:
    out = {}
    for name in NODES:
        t = np.array([r[name]["exit_s"] for r in runs])
        out[name] = {"median_s": float(np.median(t)), "max_s": float(t.max()),
                     "nonzero_status": sum(r[name]["status"] not in (0,) for r in runs),
                     "runs_with_problems": sum(bool(r[name]["problems"]) for r in runs)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--burners", type=int, default=2)
    ap.add_argument("--settle-s", type=float, default=8.0)
    ap.add_argument("--tree", type=Path, default=ROOT)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "shutdown.json")
    args = ap.parse_args(argv)
    load = burners(args.burners)
    try:
        graph = [one_graph_run(args.tree.resolve(), args.settle_s) for _ in range(args.runs)]
        collect = [one_collect_run(args.tree.resolve(), args.settle_s) for _ in range(args.runs)]
    finally:
        for b in load:
            b.kill()
    res = {"tree": str(args.tree), "runs": args.runs, "burners": args.burners,
           "load_average": os.getloadavg(), "machine": platform.platform(),
           "nodes": graph, "nodes_summary": summary(graph), "collect": collect}
    print(f"SIGINT -> exit, {args.runs} runs, {args.burners} CPU burners")
    for name, s in res["nodes_summary"].items():
        print(f"  {name:<14} median {s['median_s']:.2f} s  max {s['max_s']:.2f} s  "
              f"nonzero status {s['nonzero_status']}  runs with errors {s['runs_with_problems']}")
    t = [c["exit_s"] for c in collect]
    print(f"  mile-ros collect median {np.median(t):.2f} s  max {max(t):.2f} s  statuses "
          f"{[c['status'] for c in collect]}  errors {[c['problems'] for c in collect]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
