"""Arbiter timing at a 20 Hz control rate over real DDS.

The arbiter node runs in its own process, this script plays arm (observation), policy server
(a_r) and joystick (Joy), and listens to the arbiter's command and intervention topics.

Phases (each `--seconds` long):
  autonomous  obs(t) on a 50 ms grid, a_r(t) `--inference-ms` later, Joy at 100 Hz: tick jitter
              (deviation of the command period from 50 ms), obs->command and a_r->command latency
  takeover    every other tick a takeover press arrives 1 ms after obs(t), before a_r(t): the
              press decides the tick at once -> Joy->command latency; the ticks in between are
              taken over (decided on obs(t) alone) and the next press hands back
  lockstep    a second arbiter with joy_sync=true (the simulated person): each tick is decided by
              the person's Joy(t), sent after a_r(t) -> Joy->command latency on every tick
The first second of each phase is not counted. By default everything runs twice: with the normal
scheduler, and with both processes SCHED_FIFO 10 (how a robot computer runs its control nodes).
Targets: p99 tick jitter < 2 ms, p99 Joy->command < 5 ms.

    python bench/bench_latency.py [--seconds 15] [--priorities 0,10] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(101, 200)))

import rclpy  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import JointState, Joy  # noqa: E402
from tqdm import tqdm  # noqa: E402

from mile_ros import interfaces as itf  # noqa: E402
from mile_ros.params import resolve  # noqa: E402
from mile_ros.teleop.arbiter import ArbiterConfig, JoyMap  # noqa: E402

RATE_HZ = 20.0
PERIOD = 1.0 / RATE_HZ
NAMES = ["dx", "dy", "dz", "gripper"]


def sleep_until(t: float) -> None:
    """Sleep, then spin the last half millisecond, so the source itself keeps a clean grid."""
    while (left := t - time.monotonic()) > 0:
        if left > 0.001:
            time.sleep(left - 0.0005)


class Source:
    """Arm + policy server + joystick in one process, and the sink for the arbiter's outputs."""

    def __init__(self, ctx):
        self.node = Node("bench_source", context=ctx)
        n = self.node
        self.pub_obs = n.create_publisher(JointState, itf.OBSERVATION, 10)
        self.pub_ar = n.create_publisher(JointState, itf.ACTION_ROBOT, 10)
        self.pub_joy = n.create_publisher(Joy, itf.JOY, 10)
        self.commands, self.flags = {}, {}
        n.create_subscription(JointState, itf.COMMAND, self._on(self.commands), 10)
        n.create_subscription(JointState, itf.INTERVENTION, self._on(self.flags), 10)
        self.map = JoyMap(ArbiterConfig.from_params(resolve("arbiter")))
        self.joy_lock = threading.RLock()
        self.held: set = set()
        self.executor = SingleThreadedExecutor(context=ctx)
        self.executor.add_node(n)
        threading.Thread(target=self.executor.spin, daemon=True).start()
        self.joy_running = True
        threading.Thread(target=self._joy_stream, daemon=True).start()

    @staticmethod
    def _on(store):
        def cb(msg):
            store[itf.stamp_to_ns(msg.header.stamp)] = (time.monotonic(), list(msg.position))
        return cb

    def joy(self, stamp_ns=None, held=None) -> float:
        """Publish the controller's state (after setting the held buttons); returns send time."""
        with self.joy_lock:
            if held is not None:
                self.held = held
            axes, buttons = self.map.joy_for([0.2, 0.0, 0.0, 0.0], self.held, 6, 17)
            msg = Joy(axes=[float(a) for a in axes], buttons=buttons)
            msg.header.stamp = itf.ns_to_stamp(stamp_ns if stamp_ns is not None
                                               else time.time_ns())
            sent = time.monotonic()
            self.pub_joy.publish(msg)
        return sent

    def _joy_stream(self):
        while self.joy_running:
            self.joy()
            time.sleep(0.01)                     # a 100 Hz joystick driver

    def obs(self, stamp_ns) -> float:
        msg = itf.vector_msg(["x"], [0.0], stamp_ns)
        sent = time.monotonic()
        self.pub_obs.publish(msg)
        return sent

    def a_r(self, stamp_ns) -> float:
        msg = itf.vector_msg(NAMES, [0.1, -0.1, 0.05, 0.5], stamp_ns)
        sent = time.monotonic()
        self.pub_ar.publish(msg)
        return sent

    def wait_for_arbiter(self, timeout=30.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if (self.node.count_subscribers(itf.OBSERVATION) >= 1
                    and self.node.count_publishers(itf.COMMAND) >= 1):
                time.sleep(1.0)                   # let discovery settle both ways
                return
            time.sleep(0.05)
        raise RuntimeError("the arbiter process did not appear on DDS")

    def close(self):
        self.joy_running = False
        time.sleep(0.05)
        self.executor.shutdown(timeout_sec=5)
        self.node.destroy_node()


def start_arbiter(priority: int = 0, **params) -> subprocess.Popen:
    args = ([sys.executable, "-c", f"import os; os.sched_setscheduler(0, os.SCHED_FIFO, "
             f"os.sched_param({priority})); import runpy; "
             f"runpy.run_module('mile_ros.nodes.arbiter', run_name='__main__')"]
            if priority else [sys.executable, "-m", "mile_ros.nodes.arbiter"]) + ["--ros-args"]
    for k, v in {"control_rate_hz": RATE_HZ, **params}.items():
        args += ["-p", f"{k}:={str(v).lower() if isinstance(v, bool) else v}"]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


WARMUP_TICKS = 20                  # the first second of each phase is run but not counted


def run_phase(src: Source, name: str, seconds: float, inference_s: float, bar) -> dict:
    """Drive one phase; returns per-tick records (after the warm-up)."""
    n_ticks = int(seconds * RATE_HZ) + WARMUP_TICKS
    if name == "lockstep":          # the simulated person sends Joy(t) per tick, no 100 Hz stream
        src.joy_running = False
        time.sleep(0.05)
    t0 = time.monotonic() + 0.2
    base_stamp = time.time_ns()
    ticks = []
    for k in range(n_ticks):
        stamp = base_stamp + int(k * PERIOD * 1e9)
        sleep_until(t0 + k * PERIOD)
        rec = {"stamp": stamp, "obs": src.obs(stamp), "kind": "autonomous"}
        if name == "takeover":
            sleep_until(rec["obs"] + 0.001)
            rec["joy"] = src.joy(held={"takeover"})
            rec["kind"] = "press_takeover" if k % 2 == 0 else "taken_over"
            sleep_until(rec["obs"] + 0.004)
            rec["a_r"] = src.a_r(stamp)
            sleep_until(rec["obs"] + 0.02)
            src.joy(held=set())
        elif name == "lockstep":
            sleep_until(rec["obs"] + inference_s)
            rec["a_r"] = src.a_r(stamp)
            sleep_until(rec["a_r"] + 0.001)
            rec["joy"] = src.joy(stamp_ns=stamp)  # the person's Joy(t) decides the tick
            rec["kind"] = "lockstep"
        else:
            sleep_until(rec["obs"] + inference_s)
            rec["a_r"] = src.a_r(stamp)
        ticks.append(rec)
        bar.update(1 if k >= WARMUP_TICKS else 0)
    time.sleep(0.3)
    for rec in ticks:
        got = src.commands.get(rec["stamp"])
        rec["command"] = got[0] if got else None
        flags = src.flags.get(rec["stamp"])
        rec["flags"] = flags[1] if flags else None
    return ticks[WARMUP_TICKS:]


def pct(values, q) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def summary_ms(values) -> dict:
    v = np.asarray(values, dtype=float) * 1e3
    if not v.size:
        raise RuntimeError("no samples: the arbiter published no commands (is it running?)")
    return {"n": int(v.size), "p50_ms": pct(v, 50), "p99_ms": pct(v, 99),
            "max_ms": float(v.max()) if v.size else None}


def analyse(phases: dict) -> dict:
    out = {}
    for name, ticks in phases.items():
        done = [r for r in ticks if r["command"] is not None]
        res = {"ticks": len(ticks), "commands": len(done),
               "obs_to_command": summary_ms([r["command"] - r["obs"] for r in done])}
        cmd_times = [r["command"] for r in ticks]
        intervals = [b - a for a, b in zip(cmd_times, cmd_times[1:]) if a and b]
        res["tick_jitter"] = summary_ms([abs(d - PERIOD) for d in intervals])
        obs_times = [r["obs"] for r in ticks]
        res["source_jitter"] = summary_ms([abs(b - a - PERIOD)
                                           for a, b in zip(obs_times, obs_times[1:])])
        if name == "autonomous":
            res["a_r_to_command"] = summary_ms([r["command"] - r["a_r"] for r in done])
            res["holds"] = sum(1 for r in done if r["flags"] and r["flags"][1] > 0)
        if name == "takeover":
            presses = [r for r in done if r["kind"] == "press_takeover"]
            res["joy_to_command"] = summary_ms([r["command"] - r["joy"] for r in presses])
            res["press_ticks_taken_over"] = sum(1 for r in presses if r["flags"][0] > 0)
            res["press_ticks"] = len(presses)
        if name == "lockstep":
            res["joy_to_command"] = summary_ms([r["command"] - r["joy"] for r in done])
            res["a_r_to_command"] = summary_ms([r["command"] - r["a_r"] for r in done])
        out[name] = res
    return out


def run_once(seconds: float, inference_s: float, priority: int) -> dict:
    """All three phases with both processes at SCHED_FIFO `priority` (0: the normal scheduler)."""
    policy = os.SCHED_FIFO if priority else os.SCHED_OTHER
    os.sched_setscheduler(0, policy, os.sched_param(priority))  # threads made below inherit it
    ctx = Context()
    rclpy.init(context=ctx)
    src = Source(ctx)
    load_start = os.getloadavg()
    phases = {}
    label = f"SCHED_FIFO {priority}" if priority else "normal scheduling"
    bar = tqdm(total=int(3 * seconds * RATE_HZ), unit="tick", desc=f"latency ({label})")
    try:
        for arbiter_params, names in (({"joy_sync": False}, ("autonomous", "takeover")),
                                      ({"joy_sync": True}, ("lockstep",))):
            proc = start_arbiter(priority, handback_ramp_s=0.5, **arbiter_params)
            try:
                src.wait_for_arbiter()
                for name in names:
                    bar.set_postfix_str(name)
                    phases[name] = run_phase(src, name, seconds, inference_s, bar)
            finally:
                stop(proc)
                if proc.returncode not in (0, -15):
                    print(proc.stderr.read()[-2000:], file=sys.stderr)
    finally:
        bar.close()
        src.close()
        rclpy.shutdown(context=ctx)
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    res = analyse(phases)
    jitter_p99 = max(r["tick_jitter"]["p99_ms"] for r in res.values())
    joy_p99 = max(res["takeover"]["joy_to_command"]["p99_ms"],
                  res["lockstep"]["joy_to_command"]["p99_ms"])
    return {"scheduling": label, "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
            "phases": res, "tick_jitter_p99_ms": jitter_p99, "joy_to_command_p99_ms": joy_p99,
            "met": {"tick_jitter_p99": jitter_p99 < 2.0, "joy_to_command_p99": joy_p99 < 5.0}}


def fmt(d: dict) -> str:
    return f"p50 {d['p50_ms']:7.3f} ms  p99 {d['p99_ms']:7.3f} ms  max {d['max_ms']:7.3f} ms"


def print_run(run: dict) -> None:
    print(f"== {run['scheduling']}  (load average {run['loadavg_start'][0]:.2f} -> "
          f"{run['loadavg_end'][0]:.2f})")
    for name, r in run["phases"].items():
        print(f"[{name}] {r['commands']}/{r['ticks']} commands")
        print(f"  tick jitter |period - 50 ms|  {fmt(r['tick_jitter'])}")
        print(f"    (the source's own jitter)   {fmt(r['source_jitter'])}")
        print(f"  observation -> command        {fmt(r['obs_to_command'])}")
        if "a_r_to_command" in r:
            print(f"  a_r -> command                {fmt(r['a_r_to_command'])}")
        if "joy_to_command" in r:
            print(f"  Joy -> command                {fmt(r['joy_to_command'])}")
    met = run["met"]
    print(f"targets: p99 tick jitter < 2 ms {'met' if met['tick_jitter_p99'] else 'NOT met'} "
          f"({run['tick_jitter_p99_ms']:.3f} ms); p99 Joy->command < 5 ms "
          f"{'met' if met['joy_to_command_p99'] else 'NOT met'} "
          f"({run['joy_to_command_p99_ms']:.3f} ms)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    ap.add_argument("--inference-ms", type=float, default=2.0, help="simulated policy time")
    ap.add_argument("--priorities", default="0,10",
                    help="comma-separated SCHED_FIFO priorities, one run each; 0 = the normal "
                         "scheduler (a robot computer runs its control nodes real-time, e.g. "
                         "`chrt -f 10`; needs CAP_SYS_NICE)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/latency.json"))
    args = ap.parse_args(argv)
    try:
        priorities = [int(x) for x in args.priorities.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--priorities must be integers, got {args.priorities!r}")

    runs = []
    for priority in priorities:
        try:
            run = run_once(args.seconds, args.inference_ms / 1e3, priority)
        except PermissionError:
            print(f"SCHED_FIFO {priority}: not permitted here (needs CAP_SYS_NICE); skipped",
                  file=sys.stderr)
            continue
        runs.append(run)
        print_run(run)
    report = {
        "bench": "arbiter latency over DDS (arbiter in its own process)",
        "command": "python bench/bench_latency.py " + " ".join(sys.argv[1:] if argv is None
                                                               else argv),
        "control_rate_hz": RATE_HZ, "seconds_per_phase": args.seconds,
        "warmup_ticks_excluded": WARMUP_TICKS, "inference_ms": args.inference_ms,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "rmw": os.environ.get("RMW_IMPLEMENTATION", "default (fastrtps)")},
        "targets": {"tick_jitter_p99_ms": 2.0, "joy_to_command_p99_ms": 5.0},
        "runs": runs,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0 if runs else 1


if __name__ == "__main__":
    sys.exit(main())
