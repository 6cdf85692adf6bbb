"""Fleet scale, measured -> bench/results/fleet.json (README "Fleet", "Scale on paper").

1. trainer   `mile-ros train --bags r1/iter1 .. rN/iter1 --robot-name r1 .. rN --no-deliver
             --only --init none` (MILE defaults) in its own process, on rosbag2 bags worth 1, 2
             and 4 robots (each robot: --episodes episodes of up to --max-ticks ticks from the
             simulated WidowX, ~26% interventions; written like `ros2 bag record`, mcap): the
             process's wall time, and from its metrics file the split read (bags -> episodes),
             fit (MILE), write (checkpoint + latest), with ticks and gradient updates.
2. delivery  N policy servers (namespaces r1..rN, each its own process, signed checkpoints only)
             on this machine; this process saves a checkpoint (hidden layers --hidden: ~0.1, 5
             and 20 MB) and delivers it step by step as `train` does (`delivery.deliver`): pack
             and sign, a new sender node, discovery of every server and their answer history
             (`CheckpointSender._settle`, at least 0.3 s), one publish to every robot, the
             answers awaited together. Measured per robot: written -> "pending" on its
             policy/active (a listener here), split into pack+sign, node, discovery (up to the
             publish) and publish -> answer (the sender's); UDP buffer drops (/proc/net/snmp).
             Over the loopback interface: Fast DDS with UDPv4 only (--transport shm: its
             default, shared memory between the processes of one machine).
3. load      `mile-ros collect --sim` (one simulated station: five node processes, six with
             the camera) for --collect-s s once it records: CPU seconds per second of each
             process (/proc/<pid>/stat utime + stime), and the bytes per second its recorded
             topics carry (the bags' serialised messages per topic over their duration):
             without and with the camera (96x96 rgb8 at 10 Hz, config/collect.yaml).

    python bench/bench_fleet.py                            # the real run: about 5 min
    python bench/bench_fleet.py --smoke --out /tmp/fleet.json   # about 45 s
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
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "test"))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))

from support.ros_graph import Watcher, start_server, stop  # noqa: E402
from support.train_helpers import simulate_episode, write_external_bag  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "fleet.json"
# a_r = expert + N(0, 1.2^2) clipped; the expert takes over where they differ by > 1.3: episodes
# run to the 300-tick timeout (as the demo's do) with ~26% interventions
ROBOT_NOISE, THRESHOLD = 1.2, 1.3


def say(msg: str) -> None:
    print(msg, flush=True)


def child_env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **extra)
    if env.get("FASTDDS_BUILTIN_TRANSPORTS") is None:
        env.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    return env


def default_sigint() -> None:
    """In a child: SIGINT back to its default (a shell's `cmd &` would have it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stats(values) -> dict:
    v = [float(x) for x in values]
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)} \
        if v else {}


# --- 1. the trainer ------------------------------------------------------------------------------
def write_fleet_bags(root: Path, robots: int, episodes: int, max_ticks: int) -> float:
    """Write `episodes` bags per robot r1..r<robots> under root/r<i>/iter1; return seconds."""
    t0 = time.perf_counter()
    for i in range(1, robots + 1):
        for j in range(episodes):
            ep = simulate_episode(1000 * i + j, max_ticks=max_ticks, robot_noise=ROBOT_NOISE,
                                  threshold=THRESHOLD)
            write_external_bag(root / f"r{i}" / "iter1" / f"ep{j}", ep, namespace=f"r{i}",
                               storage="mcap", episode_index=j,
                               t0_ns=(1_700_000_000 + 1000 * i + 20 * j) * 10**9)
    return time.perf_counter() - t0


def time_train(bags: Path, robots: int, out: Path, args) -> dict:
    """Run `mile-ros train` on robots r1..r<robots>' bags (no delivery); return its figures."""
    names = [f"r{i}" for i in range(1, robots + 1)]
    cmd = [sys.executable, "-m", "mile_ros.cli", "train", "--bags",
           *[str(bags / n / "iter1") for n in names], "--only", "--out", str(out), "--init",
           "none", "--robot-name", *names, "--no-deliver", "--no-progress", "--epochs-scale",
           f"{args.epochs_scale:g}", "--device", args.device]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True,
                       timeout=1800, preexec_fn=default_sigint)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"train failed ({r.returncode}):\n{r.stderr[-3000:]}")
    metrics = json.loads(max(out.glob("*.metrics.json"), key=os.path.getmtime).read_text())
    t, data = metrics["timings_s"], metrics["data"]
    ckpt = Path(metrics["checkpoint"])
    return {"robots": robots, "episodes": data["episodes"], "ticks": data["ticks"],
            "interventions": data["interventions"], "updates": metrics["updates_total"],
            "ms_per_update": metrics["ms_per_update"], "read_s": t["load"],
            "fit_s": t["train"], "write_s": t["save"],
            "other_s": t["total"] - t["load"] - t["train"] - t["save"],
            "in_process_s": t["total"], "process_wall_s": wall,
            "process_start_s": wall - t["total"],
            "checkpoint_bytes": sum(f.stat().st_size for f in ckpt.iterdir())}


def bench_train(tmp: Path, args) -> dict:
    bags = tmp / "bags"
    gen_s = write_fleet_bags(bags, max(args.robots), args.episodes, args.max_ticks)
    say(f"trainer: bags for {max(args.robots)} robots written in {gen_s:.1f} s (not timed)")
    rows = []
    for n in args.robots:
        for rep in range(args.train_repeats):
            row = time_train(bags, n, tmp / f"ckpt_train_{n}_{rep}", args)
            rows.append(row)
            say(f"  {n} robot(s): {row['ticks']:6d} ticks {row['updates']:5d} updates  "
                f"read {row['read_s']:5.2f} s  fit {row['fit_s']:6.1f} s  write "
                f"{row['write_s']:5.2f} s  process {row['process_wall_s']:6.1f} s")
    return {"bag_generation_s": gen_s, "rows": rows}


# --- 2. checkpoint delivery ----------------------------------------------------------------------
def make_checkpoints(tmp: Path, hidden: list[int]) -> list[dict]:
    """Train a tiny budget at each hidden width; return [{hidden, dir, model, bytes}]."""
    from mile_ros.learning.checkpoint import checkpoint_to_bytes, load_checkpoint
    from mile_ros.tools import train

    bag = tmp / "bags" / "r1" / "iter1"
    out = []
    for h in hidden:
        res = train.run_training([bag], tmp / f"ckpt_h{h}", init="none", epochs_scale=0.01,
                                 settings={"hidden": [h, h]}, progress=False,
                                 say=lambda m: None, robot="r1")
        size = len(checkpoint_to_bytes(res.checkpoint))
        out.append({"hidden": h, "dir": res.checkpoint, "bytes": size,
                    "model": load_checkpoint(res.checkpoint)})
        say(f"delivery: checkpoint hidden=[{h}, {h}]: {size / 1e6:.2f} MB")
    return out


def udp_errors() -> Counter:
    """Return this namespace's UDP datagrams dropped for a full receive / send buffer."""
    rows = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
            if line.startswith("Udp:")]
    return Counter({k: int(rows[1][rows[0].index(k)]) for k in ("RcvbufErrors", "SndbufErrors")})


def fresh_checkpoint(ck: dict, path: Path) -> tuple[str, float]:
    """Save ck's model, perturbed (new bytes, newer), at `path`; return (id, written at)."""
    import torch

    from mile_ros.learning.checkpoint import save_checkpoint

    with torch.no_grad():
        for p in ck["model"].policy.parameters():
            p.add_(1e-4 * torch.randn_like(p))
    cid = save_checkpoint(ck["model"], path)
    return cid, time.monotonic()


def deliver_once(ck: dict, path: Path, robots: list[str], watcher, key: bytes) -> list[dict]:
    """Save one checkpoint and deliver it to `robots`; return one sample per robot.

    Step by step as `delivery.deliver` (what `train` runs): pack, sign, a new sender node
    (discovery), publish to every robot at once, the answers awaited together.
    """
    from mile_ros.learning.checkpoint import checkpoint_to_bytes
    from mile_ros.policy import delivery, signing

    drops0 = udp_errors()
    cid, written = fresh_checkpoint(ck, path)
    data = checkpoint_to_bytes(path)
    signature = signing.sign(data, key)
    packed = time.monotonic()
    sender = delivery.CheckpointSender(robots)
    node = time.monotonic()
    try:
        answers = sender.send_all(data, cid, 120.0, signature)
    finally:
        sender.close()
    drops = udp_errors() - drops0
    out = []
    for r in robots:
        a = answers[r]
        if a.state != "pending":
            raise SystemExit(f"{r} answered {a.state}: {a.reason}")
        when, _ = watcher.wait_for(r, lambda m: m["state"] == "pending" and m["id"] == cid,
                                   since=written, what=f"{cid} pending")
        out.append({"robot": r, "bytes": len(data), "hidden": ck["hidden"],
                    "written_to_pending_s": when - written, "publish_to_answer_s": a.seconds,
                    "pack_sign_s": packed - written, "node_s": node - packed,
                    "discovery_s": when - node - a.seconds,   # settle until the publish
                    "rcvbuf_drops": drops["RcvbufErrors"],
                    "sndbuf_drops": drops["SndbufErrors"]})
    for r in robots:            # no observation taken yet: the server runs it at once
        watcher.wait_for(r, lambda m: m["state"] == "active" and m["id"] == cid,
                         since=written, what=f"{cid} active")
    return out


def start_servers(tmp: Path, robots: list[str], first: Path, key_file: Path, watcher) -> list:
    from mile_ros.learning.checkpoint import verify_checkpoint

    first_id, t0 = verify_checkpoint(first)["id"], time.monotonic()
    procs = [start_server(tmp, r, first, key_file=key_file, env=child_env()) for r in robots]
    for r in robots:
        watcher.wait_for(r, lambda a: a["state"] == "active" and a["id"] == first_id, since=t0,
                         timeout=300, what=f"{r}'s policy server running")
    say(f"  {len(robots)} policy server(s) up in {time.monotonic() - t0:.1f} s")
    return procs


def bench_delivery(tmp: Path, args) -> dict:
    if args.transport == "udp":
        os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = "UDPv4"   # before any context: ours, theirs
    if not (tmp / "bags" / "r1").is_dir():
        write_fleet_bags(tmp / "bags", 1, 1, 100)
    checkpoints = make_checkpoints(tmp, args.hidden)
    key_file = tmp / "fleet.key"
    key_file.write_text(secrets.token_hex(32) + "\n")
    key_file.chmod(0o600)
    key = key_file.read_text().strip().encode()
    all_robots = [f"r{i}" for i in range(1, max(args.servers) + 1)]
    watcher = Watcher(all_robots)
    samples = []
    try:
        for n in args.servers:
            robots, home = all_robots[:n], tmp / f"servers_{n}"
            home.mkdir()
            procs = start_servers(home, robots, checkpoints[0]["dir"], key_file, watcher)
            try:
                for w in range(args.warmup):    # untimed: servers warm, histories not empty
                    deliver_once(checkpoints[0], home / f"warmup_{w}", robots, watcher, key)
                for ck in checkpoints:
                    for rep in range(args.repeats):
                        got = deliver_once(ck, home / f"h{ck['hidden']}_{rep}", robots,
                                           watcher, key)
                        samples += [dict(s, servers=n, repeat=rep) for s in got]
                        w2p = max(s["written_to_pending_s"] for s in got)
                        say(f"    {n} server(s) {ck['bytes'] / 1e6:6.2f} MB rep {rep}: written "
                            f"-> last pending {w2p:.2f} s")
            finally:
                for p in procs:
                    stop(p)
    finally:
        watcher.close()
        os.environ.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    return {"transport": args.transport, "signed": True, "samples": samples,
            "summary": delivery_summary(samples)}


def delivery_summary(samples: list[dict]) -> list[dict]:
    rows = []
    for n, h in sorted({(s["servers"], s["hidden"]) for s in samples}):
        sel = [s for s in samples if s["servers"] == n and s["hidden"] == h]
        once = [s for s in sel if s["robot"] == sel[0]["robot"]]     # one per delivery
        rows.append({"servers": n, "hidden": h, "mb": sel[0]["bytes"] / 1e6,
                     **{k: stats(s[k] for s in sel) for k in (
                         "written_to_pending_s", "publish_to_answer_s", "pack_sign_s",
                         "node_s", "discovery_s")},
                     "rcvbuf_drops": sum(s["rcvbuf_drops"] for s in once),
                     "sndbuf_drops": sum(s["sndbuf_drops"] for s in once)})
    return rows


# --- 3. one station's load -----------------------------------------------------------------------
def node_pids(pid: int) -> dict[str, int]:
    """Return {node: pid} of `mile-ros collect` process `pid`'s node children."""
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
    out = {}
    for k in kids:
        try:
            cmd = Path(f"/proc/{k}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for part in cmd:
            if part.startswith(b"mile_ros.nodes."):
                out[part.decode().rsplit(".", 1)[1]] = k
    return out


def wait_recording(proc, iter_dir: Path, log: Path, timeout: float = 300.0) -> None:
    """Wait until the recorder has opened its first bag (the graph ticks)."""
    end = time.monotonic() + timeout
    while not (iter_dir.is_dir() and any(iter_dir.glob("episode_*"))):
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            raise SystemExit(f"collect did not start recording:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def run_collect(tmp: Path, camera: bool, seconds: float) -> tuple[dict, float, Path]:
    """Run `mile-ros collect --sim` for `seconds` once it records; return CPU s/s per node."""
    label = "camera" if camera else "state"
    iter_dir, log = tmp / f"collect_{label}" / "iter1", tmp / f"collect_{label}.log"
    cmd = [sys.executable, "-m", "mile_ros.cli", "collect", "--sim", "--episodes", "0",
           "--out", str(iter_dir), "--no-progress"] + ["--camera"] * camera
    t_start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(FASTDDS_BUILTIN_TRANSPORTS=None),
                                stdout=out, stderr=subprocess.STDOUT, preexec_fn=default_sigint)
    try:
        wait_recording(proc, iter_dir, log)
        startup = time.monotonic() - t_start
        time.sleep(2.0)
        pids = node_pids(proc.pid)
        pids["collect"] = proc.pid
        cpu0, t0 = {n: cpu_seconds(p) for n, p in pids.items()}, time.monotonic()
        time.sleep(seconds)
        cpu1, t1 = {n: cpu_seconds(p) for n, p in pids.items()}, time.monotonic()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    cpu = {n: (cpu1[n] - cpu0[n]) / (t1 - t0) for n in pids}
    return cpu, startup, iter_dir


def topic_rates(iter_dir: Path) -> dict:
    """Per topic: messages and serialised bytes per second over the bags' duration."""
    from rosbags.rosbag2 import Reader

    count, size, duration, files = Counter(), Counter(), 0.0, 0
    for bag in sorted(p for p in iter_dir.glob("episode_*") if p.is_dir()):
        try:
            with Reader(bag) as reader:
                if reader.duration < 1e9:           # a bag cut at the very start
                    continue
                duration += reader.duration / 1e9
                for conn, _, raw in reader.messages():
                    topic = conn.topic.split("/", 2)[-1]
                    count[topic] += 1
                    size[topic] += len(raw)
        except Exception as e:  # noqa: BLE001 - the bag cut by Ctrl-C may be unreadable
            say(f"  (skipped {bag.name}: {type(e).__name__})")
            continue
        files += sum(f.stat().st_size for f in bag.iterdir())
    duration = max(duration, 1e-9)
    topics = {t: {"msgs_per_s": count[t] / duration, "bytes_per_s": size[t] / duration,
                  "bytes_per_msg": size[t] / count[t]} for t in sorted(count)}
    return {"bag_seconds": duration, "topics": topics,
            "payload_bytes_per_s": sum(size.values()) / duration,
            "msgs_per_s": sum(count.values()) / duration, "bag_file_bytes_per_s": files / duration}


def bench_load(tmp: Path, args) -> list[dict]:
    rows = []
    for variant in args.variants:
        cpu, startup, iter_dir = run_collect(tmp, variant == "camera", args.collect_s)
        rates = topic_rates(iter_dir)
        rows.append({"variant": variant, "window_s": args.collect_s, "startup_s": startup,
                     "cpu_s_per_s": cpu, **rates})
        say(f"load ({variant}): started in {startup:.0f} s; CPU s/s "
            + ", ".join(f"{n} {v:.3f}" for n, v in cpu.items())
            + f"; recorded topics {rates['payload_bytes_per_s'] / 1e3:.1f} kB/s")
    return rows


# --- report --------------------------------------------------------------------------------------
def machine() -> dict:
    import torch

    return {"cpus": os.cpu_count(), "loadavg_start": list(os.getloadavg()),
            "torch": torch.__version__, "torch_threads_train": 1,
            "python": platform.python_version(), "platform": platform.platform(),
            "rmw": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp (default)"),
            "ros_domain_id": int(os.environ["ROS_DOMAIN_ID"])}


def print_tables(res: dict) -> None:
    if "train" in res:
        say("\ntrainer (mile-ros train --no-deliver, MILE defaults)")
        say(f"{'robots':>6} {'ticks':>6} {'updates':>7} {'read s':>7} {'fit s':>7} "
            f"{'write s':>7} {'process s':>9} {'ms/update':>9}")
        for r in res["train"]["rows"]:
            say(f"{r['robots']:6d} {r['ticks']:6d} {r['updates']:7d} {r['read_s']:7.2f} "
                f"{r['fit_s']:7.1f} {r['write_s']:7.2f} {r['process_wall_s']:9.1f} "
                f"{r['ms_per_update']:9.2f}")
    if "delivery" in res:
        d = res["delivery"]
        say(f"\ndelivery: checkpoint written -> 'pending' on policy/active ({d['transport']}, "
            f"signed); medians, max of written -> pending")
        say(f"{'servers':>7} {'MB':>6} {'median s':>8} {'max s':>6} {'pack+sign':>9} "
            f"{'node':>5} {'discovery':>9} {'pub->ans':>8} {'drops rcv/snd':>13}")
        for r in d["summary"]:
            m = {k: r[k].get("median", float("nan")) for k in (
                "pack_sign_s", "node_s", "discovery_s", "publish_to_answer_s")}
            w = r["written_to_pending_s"]
            say(f"{r['servers']:7d} {r['mb']:6.2f} {w['median']:8.2f} {w['max']:6.2f} "
                f"{m['pack_sign_s']:9.2f} {m['node_s']:5.2f} {m['discovery_s']:9.2f} "
                f"{m['publish_to_answer_s']:8.2f} {r['rcvbuf_drops']:>6d}/{r['sndbuf_drops']:<6d}")
    for r in res.get("load", []):
        say(f"\nload, one simulated station ({r['variant']}, {r['window_s']:g} s window): CPU s/s")
        say("  " + "  ".join(f"{n} {v:.3f}" for n, v in r["cpu_s_per_s"].items()))
        say(f"  recorded topics: {r['payload_bytes_per_s'] / 1e3:.1f} kB/s serialised, "
            f"{r['msgs_per_s']:.0f} msgs/s; bag files {r['bag_file_bytes_per_s'] / 1e3:.1f} kB/s")
        for t, v in r["topics"].items():
            say(f"    {t:<18} {v['msgs_per_s']:6.1f} Hz x {v['bytes_per_msg']:8.0f} B = "
                f"{v['bytes_per_s'] / 1e3:7.1f} kB/s")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"results JSON (default {RESULTS})")
    ap.add_argument("--skip", nargs="*", default=[], choices=("train", "delivery", "load"))
    ap.add_argument("--robots", type=int, nargs="+", default=[1, 2, 4],
                    help="trainer: bags worth this many robots (default 1 2 4)")
    ap.add_argument("--episodes", type=int, default=8, help="trainer: episodes per robot")
    ap.add_argument("--max-ticks", type=int, default=300, help="trainer: ticks per episode")
    ap.add_argument("--epochs-scale", type=float, default=1.0,
                    help="trainer: train's --epochs-scale (1: MILE's defaults)")
    ap.add_argument("--train-repeats", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="trainer: train's --device (default cpu)")
    ap.add_argument("--servers", type=int, nargs="+", default=[1, 2, 4],
                    help="delivery: policy servers (default 1 2 4)")
    ap.add_argument("--hidden", type=int, nargs="+", default=[96, 768, 1536],
                    help="delivery: hidden width of the checkpoints (default 96 768 1536: "
                         "~0.1, 5, 20 MB)")
    ap.add_argument("--repeats", type=int, default=5, help="delivery: repeats per size")
    ap.add_argument("--warmup", type=int, default=2,
                    help="delivery: untimed deliveries first, per set of servers (default 2: "
                         "the servers have loaded a delivered checkpoint, and their "
                         "policy/active histories, which a new sender takes in, are not empty)")
    ap.add_argument("--transport", choices=("udp", "shm"), default="udp",
                    help="delivery: UDPv4 over loopback (default) or Fast DDS's default (SHM)")
    ap.add_argument("--collect-s", type=float, default=30.0, help="load: measuring window")
    ap.add_argument("--variants", nargs="+", default=["state", "camera"],
                    choices=("state", "camera"))
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes: --robots 1 2 --episodes 2 --max-ticks 60 --epochs-scale "
                         "0.02 --servers 1 2 --hidden 96 768 --repeats 1 --warmup 1 "
                         "--collect-s 4 --variants state")
    args = ap.parse_args(argv)
    if args.smoke:
        args.robots, args.episodes, args.max_ticks, args.epochs_scale = [1, 2], 2, 60, 0.02
        args.servers, args.hidden, args.repeats, args.warmup = [1, 2], [96, 768], 1, 1
        args.collect_s, args.variants = 4.0, ["state"]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    res = {"machine": machine(), "settings": {k: str(v) if isinstance(v, Path) else v
                                              for k, v in vars(args).items()}}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench_fleet_") as d:
        tmp = Path(d)
        if "train" not in args.skip:
            res["train"] = bench_train(tmp, args)
        if "delivery" not in args.skip:
            res["delivery"] = bench_delivery(tmp, args)
        if "load" not in args.skip:
            res["load"] = bench_load(tmp, args)
    res["machine"]["loadavg_end"] = list(os.getloadavg())
    res["wall_s"] = time.monotonic() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print_tables(res)
    say(f"\n{res['wall_s']:.0f} s in all; load average {res['machine']['loadavg_start'][0]:.1f} "
        f"-> {res['machine']['loadavg_end'][0]:.1f} on {res['machine']['cpus']} cpus; "
        f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
