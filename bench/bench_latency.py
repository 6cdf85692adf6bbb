"""Measure the arbiter's timing at a 20 Hz control rate over real DDS.

The arbiter node runs in its own process, spinning on the executor its `executor` parameter
names; this script plays arm (observation), policy server (a_r) and joystick (Joy), and listens
to the arbiter's command and intervention topics.

The harness. The source publishes from one dedicated thread, on a node and rclpy context of its
own, at absolute deadlines on a 50 ms grid (time.sleep until the next one, no busy wait): how
late each publish is behind its deadline is the source jitter, reported on its own instead of
being mixed into the arbiter's numbers. The sink (command, intervention) spins on a second
context in another thread. Arrival times are DDS reception stamps (rmw's received_timestamp,
CLOCK_REALTIME like the send times), so the sink's own callback delay is not counted; it is
reported as sink_delay, and the arbiter's publish -> reception time as transport. The arbiter
ticks when obs(t) arrives, so the tick jitter includes the source jitter; obs->command does not.

Phases (each `--seconds` long, after a one-second warm-up that is not counted):
  autonomous  obs(t) on the 50 ms grid, a_r(t) `--inference-ms` later, Joy at 100 Hz: tick jitter
              (deviation of the command period from 50 ms), obs->command and a_r->command latency
  takeover    every other tick a takeover press arrives 1 ms after obs(t), before a_r(t): the
              press decides the tick at once -> Joy->command latency; the ticks in between are
              taken over (decided on obs(t) alone) and the next press hands back
  lockstep    a second arbiter with joy_sync=true (the simulated person): each tick is decided by
              the person's Joy(t), sent after a_r(t) -> Joy->command latency on every tick

Runs: each executor (`--executors`, default events,single; passed as the arbiter's `executor`
parameter, $MILE_ROS_EXECUTOR is not passed on) x each burner count (`--burners`, default 0,2:
that many `yes > /dev/null` processes for the whole run) x each SCHED_FIFO priority
(`--priorities`, default 0 = the normal scheduler; a priority that cannot be had is recorded as
skipped). Each run records the executor the arbiter logged, load average at start and end,
burners and scheduling. Targets (p99): tick jitter < 2 ms and Joy->command < 5 ms idle, < 5 ms
and < 10 ms with burners.

    python bench/bench_latency.py [--seconds 15] [--executors events,single] [--burners 0,2]
                                  [--priorities 0] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

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
from mile_ros.nodes._runtime import EXECUTOR_ENV  # noqa: E402
from mile_ros.params import EXECUTORS, resolve  # noqa: E402
from mile_ros.teleop.arbiter import ArbiterConfig, JoyMap  # noqa: E402

RATE_HZ = 20.0
PERIOD = 1.0 / RATE_HZ
NAMES = ["dx", "dy", "dz", "gripper"]
WARMUP_TICKS = 20                  # the first second of each phase is run but not counted
# The harness's GIL hand-over bound (default 5 ms): the sink thread cannot hold up the source's
# publishes for long.
SWITCH_INTERVAL_S = 0.0005
JOY_STREAM_PERIOD = 0.01           # a 100 Hz joystick driver
# Per tick (offset from obs(t), event); the 100 Hz Joy stream sits between the other events.
STREAM = [(0.005 + i * JOY_STREAM_PERIOD, "stream") for i in range(5)]
TARGETS = {"idle": {"tick_jitter_p99_ms": 2.0, "joy_to_command_p99_ms": 5.0},
           "burners": {"tick_jitter_p99_ms": 5.0, "joy_to_command_p99_ms": 10.0}}
# setpriv ends a child (burner, arbiter) with this process, even if it is killed itself.
PDEATHSIG = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []


def schedule(name: str, n_ticks: int, inference_s: float) -> list[tuple[float, int, str]]:
    """Return the phase's publishes: (offset from the phase start in s, tick, event), in order."""
    per_tick = {
        "autonomous": [(0.0, "obs"), (inference_s, "a_r"), *STREAM],
        "takeover": [(0.0, "obs"), (0.001, "press"), (0.004, "a_r"), (0.020, "release"),
                     *STREAM],
        "lockstep": [(0.0, "obs"), (inference_s, "a_r"), (inference_s + 0.001, "joy_t")],
    }[name]
    return sorted((k * PERIOD + dt, k, kind) for k in range(n_ticks) for dt, kind in per_tick)


class Source:
    """Arm + policy server + joystick: one thread publishing on a node and context of its own.

    Between phases the thread keeps the 100 Hz Joy stream going (while `stream` is set); a
    phase (`play`) is one list of publishes at absolute deadlines, the stream included.
    """

    def __init__(self):
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.node = Node("bench_source", context=self.ctx)
        self.pub_obs = self.node.create_publisher(JointState, itf.OBSERVATION, 10)
        self.pub_ar = self.node.create_publisher(JointState, itf.ACTION_ROBOT, 10)
        self.pub_joy = self.node.create_publisher(Joy, itf.JOY, 10)
        self.map = JoyMap(ArbiterConfig.from_params(resolve("arbiter")))
        self.held: set = set()
        self.stream, self.stopping, self.job = True, False, None
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="bench-source", daemon=True)
        self.thread.start()

    def _joy_msg(self, stamp_ns: int | None = None) -> Joy:
        axes, buttons = self.map.joy_for([0.2, 0.0, 0.0, 0.0], self.held, 6, 17)
        msg = Joy(axes=[float(a) for a in axes], buttons=buttons)
        msg.header.stamp = itf.ns_to_stamp(stamp_ns if stamp_ns is not None else time.time_ns())
        return msg

    def _message(self, kind: str, stamp_ns: int):
        """Build the message of one event (before its deadline): (publisher, msg)."""
        if kind == "obs":
            return self.pub_obs, itf.vector_msg(["x"], [0.0], stamp_ns)
        if kind == "a_r":
            return self.pub_ar, itf.vector_msg(NAMES, [0.1, -0.1, 0.05, 0.5], stamp_ns)
        if kind in ("press", "release"):
            self.held = {"takeover"} if kind == "press" else set()
        return self.pub_joy, self._joy_msg(stamp_ns if kind == "joy_t" else None)

    def _play(self, events, t0: float, base_stamp: int) -> list[tuple[int, str, float, int]]:
        """Publish each event at t0 + offset; returns (tick, event, lag in s, send wall ns)."""
        out = []
        for offset, k, kind in events:
            pub, msg = self._message(kind, base_stamp + round(k * PERIOD * 1e9))
            deadline = t0 + offset
            if (left := deadline - time.monotonic()) > 0:
                time.sleep(left)          # CLOCK_MONOTONIC, absolute deadline (Python >= 3.11)
            if kind != "joy_t" and isinstance(msg, Joy):
                msg.header.stamp = itf.ns_to_stamp(time.time_ns())
            sent, wall = time.monotonic(), time.time_ns()
            pub.publish(msg)
            out.append((k, kind, sent - deadline, wall))
            self.job.progress = k + 1
        return out

    def _loop(self) -> None:
        next_joy = time.monotonic()
        while not self.stopping:
            job = self.job
            if job is not None:
                try:
                    job.records = self._play(job.events, job.t0, job.base_stamp)
                except Exception as e:  # noqa: BLE001 - handed to the waiting main thread
                    job.error = e
                self.job = None
                job.done.set()
                next_joy = time.monotonic()
                continue
            if self.stream:
                self.pub_joy.publish(self._joy_msg())
            next_joy = max(next_joy + JOY_STREAM_PERIOD, time.monotonic() - 0.1)
            self.wake.wait(max(0.0, next_joy - time.monotonic()))
            self.wake.clear()

    def play(self, events, bar) -> tuple[list, int]:
        """Run one phase on the source thread (0.2 s from now); return (records, base stamp)."""
        job = SimpleNamespace(events=events, t0=time.monotonic() + 0.2,
                              base_stamp=time.time_ns(), progress=0, records=None, error=None,
                              done=threading.Event())
        self.job = job
        self.wake.set()
        shown = 0
        while not job.done.wait(0.25):
            counted = max(0, job.progress - WARMUP_TICKS)
            bar.update(counted - shown)
            shown = counted
        bar.update(max(0, job.progress - WARMUP_TICKS) - shown)
        if job.error is not None:
            raise job.error
        return job.records, job.base_stamp

    def wait_for_arbiter(self, proc: subprocess.Popen, log, sink, timeout: float = 60.0) -> None:
        """Return once the arbiter hears the source and the sink hears the arbiter."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError(f"the arbiter exited ({proc.returncode}): {tail(log)}")
            if (self.node.count_subscribers(itf.OBSERVATION) >= 1
                    and self.node.count_publishers(itf.COMMAND) >= 1 and sink.matched()):
                time.sleep(1.0)                   # let discovery settle both ways
                return
            time.sleep(0.05)
        raise RuntimeError("the arbiter process did not appear on DDS")

    def close(self) -> None:
        self.stopping = True
        self.wake.set()
        self.thread.join(timeout=5)
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


class Sink:
    """The arbiter's command and intervention topics, spun on a context and thread of their own.

    Per stamp: (DDS reception wall ns, arbiter publish wall ns, sink callback delay ns, values).
    """

    def __init__(self):
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.node = Node("bench_sink", context=self.ctx)
        self.commands, self.flags, self.duplicates = {}, {}, 0
        self.subs = [
            self.node.create_subscription(JointState, itf.COMMAND, self._on(self.commands), 10),
            self.node.create_subscription(JointState, itf.INTERVENTION, self._on(self.flags), 10)]
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, name="bench-sink", daemon=True).start()

    def matched(self) -> bool:
        """Return whether both subscriptions have matched the arbiter's publishers."""
        return all(sub.get_publisher_count() >= 1 for sub in self.subs)

    def _on(self, store: dict):
        def cb(msg, info):
            now = time.time_ns()
            received = info["received_timestamp"] or now
            stamp = itf.stamp_to_ns(msg.header.stamp)
            if stamp in store:
                self.duplicates += 1
                return
            store[stamp] = (received, info["source_timestamp"] or received, now - received,
                            list(msg.position))
        return cb

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5)
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


def tail(log, n: int = 1500) -> str:
    log.flush()
    return Path(log.name).read_text(errors="replace")[-n:].strip()


def start_arbiter(executor: str, priority: int, log, **params) -> subprocess.Popen:
    """Start the arbiter process (chrt -f `priority` unless 0), its stderr into `log`."""
    args = [*PDEATHSIG, *(["chrt", "-f", str(priority)] if priority else []),
            sys.executable, "-m", "mile_ros.nodes.arbiter", "--ros-args"]
    for k, v in {"control_rate_hz": RATE_HZ, "executor": executor, **params}.items():
        args += ["-p", f"{k}:={str(v).lower() if isinstance(v, bool) else v}"]
    env = {k: v for k, v in os.environ.items() if k != EXECUTOR_ENV}
    env["RCUTILS_COLORIZED_OUTPUT"] = "0"
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def sched_of(pid: int) -> dict:
    """Return a process's scheduling policy, priority and nice value."""
    names = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_FIFO: "SCHED_FIFO", os.SCHED_RR: "SCHED_RR"}
    try:
        policy = os.sched_getscheduler(pid)
        return {"policy": names.get(policy, str(policy)),
                "priority": os.sched_getparam(pid).sched_priority,
                "nice": os.getpriority(os.PRIO_PROCESS, pid)}
    except OSError as e:
        return {"error": str(e)}


BURNERS: list[subprocess.Popen] = []   # every live burner, killed at exit whatever happens


def start_burners(n: int) -> None:
    for _ in range(n):
        BURNERS.append(subprocess.Popen([*PDEATHSIG, "yes"], stdout=subprocess.DEVNULL))


def kill_burners() -> None:
    while BURNERS:
        proc = BURNERS.pop()
        proc.kill()
        proc.wait()


atexit.register(kill_burners)


def tick_kind(name: str, k: int) -> str:
    if name == "takeover":
        return "press_takeover" if k % 2 == 0 else "taken_over"
    return name


def run_phase(src: Source, sink: Sink, name: str, seconds: float, inference_s: float,
              bar) -> list[dict]:
    """Drive one phase; returns per-tick records (after the warm-up), times in wall ns."""
    n_ticks = int(seconds * RATE_HZ) + WARMUP_TICKS
    if name == "lockstep":          # the simulated person sends Joy(t) per tick, no 100 Hz stream
        src.stream = False
    records, base_stamp = src.play(schedule(name, n_ticks, inference_s), bar)
    time.sleep(0.3)
    ticks = [{"stamp": base_stamp + round(k * PERIOD * 1e9), "kind": tick_kind(name, k),
              "lags": []} for k in range(n_ticks)]
    for k, kind, lag, wall in records:
        rec = ticks[k]
        rec["lags"].append(lag)
        if kind == "obs":
            rec["obs"], rec["obs_lag"] = wall, lag
        elif kind == "a_r":
            rec["a_r"] = wall
        elif kind in ("press", "joy_t"):
            rec["joy"] = wall
    for rec in ticks:
        got = sink.commands.get(rec["stamp"])
        rec["command"], rec["published"], rec["sink_delay"] = got[:3] if got else (None,) * 3
        flags = sink.flags.get(rec["stamp"])
        rec["flags"] = flags[3] if flags else None
    return ticks[WARMUP_TICKS:]


def summary_ms(values_s) -> dict:
    """Return n, p50, p99 and max in ms of values in seconds (None where there are none)."""
    v = np.asarray(list(values_s), dtype=float) * 1e3
    if not v.size:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"n": int(v.size), "p50_ms": float(np.percentile(v, 50)),
            "p99_ms": float(np.percentile(v, 99)), "max_ms": float(v.max())}


def latency(ticks: list[dict], key: str, end: str = "command") -> list[float]:
    """Return end - key (s) for the ticks that have both (wall ns)."""
    return [(r[end] - r[key]) / 1e9 for r in ticks
            if r.get(key) is not None and r.get(end) is not None]


def period_jitter(times_ns: list) -> list[float]:
    """Return |interval - 50 ms| (s) between consecutive ticks that both have a time."""
    return [abs((b - a) / 1e9 - PERIOD) for a, b in zip(times_ns, times_ns[1:]) if a and b]


def analyse_phase(name: str, ticks: list[dict]) -> dict:
    done = [r for r in ticks if r["command"] is not None]
    if not done:
        raise RuntimeError(f"{name}: the arbiter published no commands")
    res = {"ticks": len(ticks), "commands": len(done),
           "tick_jitter": summary_ms(period_jitter([r["command"] for r in ticks])),
           "obs_to_command": summary_ms(latency(done, "obs")),
           "source_jitter": summary_ms(r["obs_lag"] for r in ticks),
           "source_lag_all_events": summary_ms(lag for r in ticks for lag in r["lags"]),
           "arbiter_publish_jitter": summary_ms(period_jitter([r["published"] for r in ticks])),
           "transport": summary_ms(latency(done, "published")),
           "sink_delay": summary_ms(r["sink_delay"] / 1e9 for r in done)}
    if name in ("autonomous", "lockstep"):
        res["a_r_to_command"] = summary_ms(latency(done, "a_r"))
    if name == "autonomous":
        res["holds"] = sum(1 for r in done if r["flags"] and r["flags"][1] > 0)
    if name == "takeover":
        presses = [r for r in done if r["kind"] == "press_takeover"]
        res["joy_to_command"] = summary_ms(latency(presses, "joy"))
        res["press_ticks_taken_over"] = sum(1 for r in presses if r["flags"] and r["flags"][0] > 0)
        res["press_ticks"] = len(presses)
    if name == "lockstep":
        res["joy_to_command"] = summary_ms(latency(done, "joy"))
    return res


HEADLINE = {"tick_jitter": None, "obs_to_command": None,
            "a_r_to_command": ("autonomous", "lockstep"),
            "joy_to_command": ("takeover", "lockstep"), "source_jitter": None}


def headline(phases: dict) -> dict:
    """Return the worst p99 (ms) over the phases of each headline measure."""
    out = {}
    for metric, names in HEADLINE.items():
        values = [phases[n][metric]["p99_ms"] for n in (names or phases)
                  if n in phases and phases[n].get(metric, {}).get("p99_ms") is not None]
        out[f"{metric}_p99_ms"] = max(values) if values else None
    return out


def measure(executor: str, priority: int, seconds: float, inference_s: float,
            desc: str) -> dict:
    """All three phases against arbiter processes on `executor`; returns the run's results."""
    src, sink = Source(), Sink()
    phases, used, arbiter_sched = {}, [], []
    bar = tqdm(total=int(3 * seconds * RATE_HZ), unit="tick", desc=desc)
    try:
        for arbiter_params, names in (({"joy_sync": False}, ("autonomous", "takeover")),
                                      ({"joy_sync": True}, ("lockstep",))):
            with tempfile.NamedTemporaryFile("w+", prefix="bench_arbiter_", suffix=".log") as log:
                proc = start_arbiter(executor, priority, log, handback_ramp_s=0.5,
                                     **arbiter_params)
                try:
                    src.wait_for_arbiter(proc, log, sink)
                    arbiter_sched.append(sched_of(proc.pid))
                    for name in names:
                        bar.set_postfix_str(name)
                        phases[name] = run_phase(src, sink, name, seconds, inference_s, bar)
                finally:
                    stop(proc)
                    used += re.findall(r"arbiter: executor (.+)", tail(log, 10**6))
                    if proc.returncode not in (0, -15):
                        print(tail(log), file=sys.stderr)
    finally:
        bar.close()
        src.close()
        sink.close()
    used = sorted({u.strip() for u in used})
    return {"executor": ", ".join(used) or f"{executor} (requested; not in the arbiter's log)",
            "arbiter_sched": arbiter_sched, "sink_duplicates": sink.duplicates,
            "phases": {name: analyse_phase(name, ticks) for name, ticks in phases.items()}}


def run_once(executor: str, burners: int, priority: int, seconds: float,
             inference_s: float) -> dict:
    """One run: `burners` CPU burners, harness and arbiter at SCHED_FIFO `priority` (0: normal)."""
    label = f"SCHED_FIFO {priority}" if priority else "normal scheduling"
    run = {"executor_requested": executor, "burners": burners, "priority": priority,
           "scheduling": label}
    start_burners(burners)        # before the harness turns real-time: they stay SCHED_OTHER
    try:
        time.sleep(1.0 if burners else 0.0)
        run["loadavg_start"] = os.getloadavg()
        if priority:              # threads (source, sink, DDS) made below inherit it
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        run["harness_sched"] = sched_of(0)
        run.update(measure(executor, priority, seconds, inference_s,
                           f"{executor}, {burners} burners, {label}"))
        run["loadavg_end"] = os.getloadavg()
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        kill_burners()
    run.update(headline(run["phases"]))
    run["targets"] = targets = TARGETS["burners" if burners else "idle"]
    run["met"] = {k: run[k] is not None and run[k] < limit for k, limit in targets.items()}
    return run


def fmt(d: dict) -> str:
    if not d["n"]:
        return "no samples"
    return f"p50 {d['p50_ms']:7.3f} ms  p99 {d['p99_ms']:7.3f} ms  max {d['max_ms']:7.3f} ms"


ROWS = [("tick_jitter", "tick jitter |period - 50 ms|"), ("source_jitter", "source jitter (lag)"),
        ("obs_to_command", "observation -> command"), ("a_r_to_command", "a_r -> command"),
        ("joy_to_command", "Joy -> command"), ("transport", "arbiter publish -> reception"),
        ("sink_delay", "sink callback delay")]


def print_run(run: dict) -> None:
    print(f"== {run['executor']}, {run['burners']} burners, {run['scheduling']}  (load "
          f"average {run['loadavg_start'][0]:.2f} -> {run['loadavg_end'][0]:.2f})")
    for name, r in run["phases"].items():
        print(f"[{name}] {r['commands']}/{r['ticks']} commands")
        for key, text in ROWS:
            if key in r:
                print(f"  {text:<30} {fmt(r[key])}")


def cell(v) -> str:
    return f"{v:8.3f}" if v is not None else f"{'-':>8}"


def print_table(runs: list[dict]) -> None:
    """One line per run: the worst p99 (ms) over the phases, and the targets."""
    print(f"{'executor':<8} {'burn':>4} {'sched':<7} {'load':>11} {'tick':>8} {'obs>cmd':>8} "
          f"{'a_r>cmd':>8} {'Joy>cmd':>8} {'source':>8}  targets (p99 tick / Joy->cmd)")
    for run in runs:
        ex = run["executor_requested"]
        sched = f"fifo{run['priority']}" if run["priority"] else "normal"
        if "skipped" in run:
            print(f"{ex:<8} {run['burners']:>4} {sched:<7} skipped: {run['skipped']}")
            continue
        load = f"{run['loadavg_start'][0]:.2f}-{run['loadavg_end'][0]:.2f}"
        t, met = run["targets"], run["met"]
        verdict = (f"< {t['tick_jitter_p99_ms']:g} {'ok' if met['tick_jitter_p99_ms'] else 'MISS'}"
                   f" / < {t['joy_to_command_p99_ms']:g} "
                   f"{'ok' if met['joy_to_command_p99_ms'] else 'MISS'}")
        print(f"{ex:<8} {run['burners']:>4} {sched:<7} {load:>11} "
              f"{cell(run['tick_jitter_p99_ms'])} {cell(run['obs_to_command_p99_ms'])} "
              f"{cell(run['a_r_to_command_p99_ms'])} {cell(run['joy_to_command_p99_ms'])} "
              f"{cell(run['source_jitter_p99_ms'])}  {verdict}")


def int_list(ap, text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        ap.error(f"{flag} must be comma-separated integers, got {text!r}")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    ap.add_argument("--inference-ms", type=float, default=2.0, help="simulated policy time")
    ap.add_argument("--executors", "--executor", default="events,single",
                    help="comma-separated arbiter `executor` parameter values (auto | events | "
                         "single), one run each")
    ap.add_argument("--burners", default="0,2",
                    help="comma-separated numbers of `yes > /dev/null` CPU burners, one run each")
    ap.add_argument("--priorities", default="0",
                    help="comma-separated SCHED_FIFO priorities, one run each; 0 = the normal "
                         "scheduler (a robot computer may run its control nodes real-time, e.g. "
                         "`chrt -f 10`; needs CAP_SYS_NICE)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/latency.json"))
    args = ap.parse_args(argv)
    args.executors = [x.strip() for x in args.executors.split(",") if x.strip()]
    if bad := [x for x in args.executors if x not in EXECUTORS]:
        ap.error(f"--executors: {bad} not in {', '.join(EXECUTORS)}")
    args.burners = int_list(ap, args.burners, "--burners")
    args.priorities = int_list(ap, args.priorities, "--priorities")
    return args


def run_all(args) -> list[dict]:
    runs = []
    for priority in args.priorities:
        for burners in args.burners:
            for executor in args.executors:
                try:
                    run = run_once(executor, burners, priority, args.seconds,
                                   args.inference_ms / 1e3)
                except (OSError, RuntimeError) as e:   # no SCHED_FIFO, chrt, arbiter failed
                    run = {"executor_requested": executor, "burners": burners,
                           "priority": priority, "skipped": f"{type(e).__name__}: {e}"}
                    print(f"{executor}, {burners} burners, priority {priority}: skipped: "
                          f"{run['skipped']}", file=sys.stderr)
                runs.append(run)
                if "skipped" not in run:
                    print_run(run)
    return runs


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        runs = run_all(args)
    finally:
        kill_burners()
    print_table(runs)
    report = {
        "bench": "arbiter latency over DDS (arbiter in its own process)",
        "command": "python bench/bench_latency.py " + " ".join(sys.argv[1:] if argv is None
                                                               else argv),
        "control_rate_hz": RATE_HZ, "seconds_per_phase": args.seconds,
        "warmup_ticks_excluded": WARMUP_TICKS, "inference_ms": args.inference_ms,
        "harness": {"source": "own thread, node and context; absolute deadlines, no busy wait",
                    "sink": "own thread, node and context; SingleThreadedExecutor; times are "
                            "DDS reception stamps", "gil_switch_interval_s": SWITCH_INTERVAL_S,
                    "burner": "yes > /dev/null"},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "rmw": os.environ.get("RMW_IMPLEMENTATION", "default (fastrtps)")},
        "targets": TARGETS,
        "runs": runs,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0 if any("skipped" not in r for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
