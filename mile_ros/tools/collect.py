"""`mile-ros collect`: the collection graph without a ROS 2 distribution.

    mile-ros collect --sim --episodes 5 --out runs/demo/iter1 [--robot-name wx250s]
                     [--params my.yaml] [--realtime-factor 0] [--camera] [--iteration N]

Starts the same nodes with the same parameters as `ros2 launch mile_ros collect.launch.py`
(`graph_nodes` and `node_overrides` below are what both follow): each node is its own process,
`python -m mile_ros.nodes.<name> --ros-args -r __ns:=/<robot_name> -r __node:=<name>
--params-file <resolved file>`. The YAML is validated before anything starts; node output goes to
`<out>/../logs/iter<N>/<node>.log`. A progress bar shows episodes, tick rate and interventions.
It exits once the arm has finished `--episodes` episodes and the recorder has closed their bags,
or on Ctrl-C (every node gets SIGINT once; the recorder closes the open bag).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from mile_ros import interfaces as itf
from mile_ros.params import ConfigError, resolve, ros_params_file
from mile_ros.runs import iteration_name, split_out

STOP_ORDER = ("arm", "sim_human", "joystick", "policy_server", "arbiter", "camera", "recorder")
STOP_TIMEOUT_S = 15.0
# Lockstep (realtime_factor 0): the arm waits up to its lockstep_timeout_s (1.0 s) for a command,
# so the arbiter waits this long for a_r before holding (the default, one 50 ms control period,
# held 65% of the robot's ticks of `mile-ros demo` iterations 2-6 on a busy 2-core machine:
# bench/bench_demo_bags.py).
LOCKSTEP_A_R_TIMEOUT_S = 0.9


def graph_nodes(sim: bool, camera: bool) -> list[str]:
    """Return the nodes of the collection graph, in start order."""
    nodes = ["recorder", "arbiter", "policy_server", "sim_human" if sim else "joystick"]
    if camera:
        nodes.append("camera")
    return nodes + ["arm"]


def node_overrides(sim: bool, camera: bool, out: str, iteration: int, episodes: int,
                   realtime_factor: float | None = None) -> dict[str, dict]:
    """Parameters set from the command line / launch arguments, per node (on top of the YAML)."""
    arm = {"backend": "sim" if sim else "interbotix", "episodes": int(episodes)}
    # sim: the person answers every tick, the simulated arm owns episodes;
    # real robot: the person starts and ends episodes with the controller's buttons
    arbiter = {"joy_sync": bool(sim), "episode_buttons": not sim}
    if realtime_factor is not None:
        arm["realtime_factor"] = float(realtime_factor)
    if sim and realtime_factor == 0.0:   # lockstep: a slow a_r delays the tick, never holds it
        arbiter["a_r_timeout_s"] = LOCKSTEP_A_R_TIMEOUT_S
    over = {"arm": arm,
            "recorder": {"out": str(out), "iteration": int(iteration)},
            "arbiter": arbiter,
            # sim: unsigned checkpoints are accepted (the simulated default); a real robot
            # keeps the YAML's allow_unsigned (false: signed with checkpoint_key_file only).
            # sim + camera: an image policy acts with the frame of its own tick (lockstep)
            "policy_server": ({"allow_unsigned": True, **({"image_sync": True} if camera else {})}
                              if sim else {}),
            "camera": {"source": "sim" if sim else "opencv"}}
    return {n: over.get(n, {}) for n in graph_nodes(sim, camera)}


def resolve_graph(files: list, over: dict[str, dict]) -> dict[str, dict]:
    """Resolve every node's parameters (`over` on top of the files), validated.

    The simulated arm's first episode waits for the camera too when it is in the graph.
    """
    values = {node: resolve(node, files, v) for node, v in over.items()}
    arm = values.get("arm")
    if "camera" in values and arm is not None and "camera" not in arm["wait_for_nodes"]:
        arm["wait_for_nodes"] = [*arm["wait_for_nodes"], "camera"]
    return values


def resolved_params(args) -> dict[str, dict]:
    """Every node's parameters, validated (ConfigError names the node, parameter and file)."""
    files = [args.params] if args.params else []
    for f in files:
        if not Path(f).is_file():
            raise ConfigError(f"--params: parameter file not found: {f}")
    out, iteration = split_out(args.out, args.iteration)
    over = node_overrides(args.sim, args.camera, str(out), iteration, args.episodes,
                          args.realtime_factor)
    return resolve_graph(files, over)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mile-ros collect", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sim", action="store_true",
                    help="simulated WidowX and simulated person "
                         "(default: real arm + PS3 joystick)")
    ap.add_argument("--episodes", type=int, default=0,
                    help="sim: stop after this many episodes (0: until Ctrl-C)")
    ap.add_argument("--out", required=True, help="output directory, e.g. runs/demo/iter1")
    ap.add_argument("--iteration", type=int, default=1,
                    help="iteration number when --out does not end in iter<N>")
    ap.add_argument("--robot-name", default="wx250s", help="ROS namespace of the graph")
    ap.add_argument("--params", help="parameter file overriding config/collect.yaml")
    ap.add_argument("--realtime-factor", type=float,
                    help="sim: 1 = wall clock, 0 = lockstep (as fast as the graph answers)")
    ap.add_argument("--camera", action="store_true", help="start the camera node too")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def _check_args(args) -> None:
    if args.episodes < 0:
        raise ConfigError(f"--episodes must be >= 0, got {args.episodes}")
    if args.realtime_factor is not None and not args.realtime_factor >= 0:
        raise ConfigError(f"--realtime-factor must be >= 0, got {args.realtime_factor}")
    name = args.robot_name.strip("/")
    if not name or not all(c.isalnum() or c == "_" for c in name) or name[0].isdigit():
        raise ConfigError(f"--robot-name {args.robot_name!r} is not a valid ROS namespace "
                          "(letters, digits and _, not starting with a digit)")


def _die_with_parent() -> None:
    """In the child: get SIGINT if `mile-ros collect` itself dies (Linux).

    Then no node outlives it.
    """
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Graph:
    """The node processes: start, watch, stop."""

    def __init__(self, nodes: list[str], robot_name: str, params_file: Path, log_dir: Path):
        self.nodes, self.robot_name = nodes, robot_name
        self.params_file, self.log_dir = params_file, log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def command(self, node: str) -> list[str]:
        return [sys.executable, "-m", f"mile_ros.nodes.{node}", "--ros-args",
                "-r", f"__ns:=/{self.robot_name}", "-r", f"__node:={node}",
                "--params-file", str(self.params_file)]

    def start(self) -> None:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        env.setdefault("PYTHONUNBUFFERED", "1")
        for node in self.nodes:
            log = open(self.log_dir / f"{node}.log", "w")  # noqa: SIM115 - kept by the child
            self.procs[node] = subprocess.Popen(self.command(node), stdout=log,
                                                stderr=subprocess.STDOUT, env=env,
                                                start_new_session=True,
                                                preexec_fn=_die_with_parent)
            log.close()

    def exited(self) -> dict[str, int]:
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    def log_tail(self, node: str, lines: int = 15) -> str:
        try:
            text = (self.log_dir / f"{node}.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self) -> dict[str, int]:
        """Stop every node: SIGINT to the arm, then to all the others at once.

        The arm goes first (it stops moving and ends its episode); a node that hangs gets
        SIGTERM after STOP_TIMEOUT_S and SIGKILL 5 s later.
        """
        order = [n for n in STOP_ORDER if n in self.procs]
        for wave in (order[:1], order[1:]):
            live = [self.procs[n] for n in wave if self.procs[n].poll() is None]
            for proc in live:
                proc.send_signal(signal.SIGINT)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            for proc in live:
                _wait_or_escalate(proc, deadline)
        return {n: p.returncode for n, p in self.procs.items()}


def _wait_or_escalate(proc: subprocess.Popen, deadline: float) -> None:
    """Wait for `proc` until `deadline`; then SIGTERM, and SIGKILL 5 s later."""
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Progress:
    """Subscribes to `episode`, `intervention` and `recorder/status`; drives the progress bar."""

    def __init__(self, robot_name: str, episodes: int, show: bool):
        import rclpy
        from rclpy.node import Node
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String
        from tqdm import tqdm

        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context)
        self.node = Node("collect_progress", namespace=f"/{robot_name}", context=self.context,
                         start_parameter_services=False)
        from rclpy.executors import SingleThreadedExecutor
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.node.create_subscription(String, itf.EPISODE, self._on_episode, 20)
        self.node.create_subscription(JointState, itf.INTERVENTION, self._on_flags, 100)
        self.node.create_subscription(String, itf.RECORDER_STATUS, self._on_recorder, 20)
        self.episode, self.ended, self.recorded, self.failed = None, 0, [], []
        self.ticks, self.interventions, self.total_ticks, self.total_interventions = 0, 0, 0, 0
        self.tick_times: deque = deque(maxlen=200)
        self.bar = tqdm(total=episodes or None, unit="episode", desc="collect", disable=not show,
                        dynamic_ncols=True)

    def _on_episode(self, msg) -> None:
        try:
            event = itf.parse_episode_event(msg.data)
        except ValueError:
            return
        if event["event"] == "start":
            self.episode, self.ticks, self.interventions = event["episode"], 0, 0
        else:
            self.ended += 1
            result = {True: "success", False: "failure"}.get(event.get("success"), "?")
            self.bar.write(f"episode {event['episode']}: {event.get('reason', '')} ({result}), "
                           f"{self.ticks} ticks, {self.interventions} interventions")
            self.bar.update(1)
        self._postfix()

    def _on_flags(self, msg) -> None:
        nu = bool(msg.position[0] > 0.5) if len(msg.position) else False
        self.ticks += 1
        self.total_ticks += 1
        self.interventions += nu
        self.total_interventions += nu
        self.tick_times.append(time.monotonic())
        if self.ticks % 10 == 0:
            self._postfix()

    def _on_recorder(self, msg) -> None:
        try:
            event = json.loads(msg.data)
        except ValueError:
            return
        if event.get("event") == "episode_recorded":
            self.recorded.append(event)
        elif event.get("event") in ("episode_failed", "record_failed"):
            self.failed.append(event)
            self.bar.write(f"recorder: episode {event.get('episode')} FAILED to record: "
                           f"{event.get('error')}")

    def rate(self) -> float:
        t = self.tick_times
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0

    def _postfix(self) -> None:
        self.bar.set_postfix_str(f"ep {self.episode} tick {self.ticks} {self.rate():.0f} ticks/s "
                                 f"interventions {self.interventions}", refresh=False)

    def spin(self, seconds: float) -> None:
        self.executor.spin_once(timeout_sec=seconds)

    def close(self) -> None:
        self.bar.close()
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def prepare_sim_person(values: dict, say=None) -> None:
    """Build the simulated person and the initial policy here, once, before any node starts.

    Both are cached per seed and settings (mile_ros.sim.initial). On a fresh machine building them
    takes a minute or more -- longer than the arm waits for its nodes (`startup_timeout_s`) -- so
    a sim_human node left to build them itself joined after the first episodes had run without a
    person. With the cache filled the node starts in seconds.
    """
    if "sim_human" not in values:
        return
    from mile_ros.sim.person_driver import build_person

    t0 = time.monotonic()
    (say or _say)("preparing the simulated person and the initial policy "
                  "(built once per seed, then cached) ...")
    build_person(values["sim_human"])
    (say or _say)(f"simulated person ready ({time.monotonic() - t0:.1f} s)")


def _say(msg: str) -> None:
    print(f"mile-ros collect: {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _check_args(args)
    values = resolved_params(args)          # raises ConfigError before anything starts
    out, iteration = split_out(args.out, args.iteration)
    log_dir = out / "logs" / iteration_name(iteration)
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out: cannot create {log_dir}: {e.strerror}") from None
    params_file = ros_params_file(values, log_dir / "params.yaml")
    prepare_sim_person(values)              # after every configuration check: it takes a while
    robot_name = args.robot_name.strip("/")
    nodes = graph_nodes(args.sim, args.camera)
    print(f"mile-ros collect: {' '.join(nodes)} in /{robot_name}; bags -> {out}/iter{iteration}; "
          f"logs -> {log_dir}", file=sys.stderr)

    graph = Graph(nodes, robot_name, params_file, log_dir)
    old_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
    graph.start()  # before any thread of ours exists (the children are forked)
    progress = Progress(robot_name, args.episodes, show=not args.no_progress)
    interrupted, problem, failed_node, failed_rc = False, None, None, None
    try:
        arm_done_at = None
        while True:
            progress.spin(0.1)
            exited = graph.exited()
            died = {n: rc for n, rc in exited.items() if not (n == "arm" and rc == 0)}
            if died:
                failed_node, failed_rc = next(iter(died.items()))
                problem = f"node '{failed_node}' exited with status {failed_rc}"
                break
            if "arm" in exited:  # all episodes done: wait for the recorder to close their bags
                arm_done_at = arm_done_at or time.monotonic()
                finished = len(progress.recorded) + len(progress.failed)
                if finished >= args.episodes or time.monotonic() - arm_done_at > 20.0:
                    break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.bar.write("stopping the graph ...")
        codes = graph.stop()
        for _ in range(5):  # the recorder's last status messages
            progress.spin(0.05)
        progress.close()
        signal.signal(signal.SIGTERM, old_handler)
    if problem:
        print(f"mile-ros collect: {problem}; the end of its log "
              f"({log_dir / (failed_node + '.log')}):\n{graph.log_tail(failed_node)}",
              file=sys.stderr)
    bad = {n: rc for n, rc in codes.items()
           if rc not in (0, -signal.SIGINT) and n != failed_node}
    for node, rc in bad.items():
        print(f"mile-ros collect: node '{node}' stopped with status {rc} (log: "
              f"{log_dir / (node + '.log')})", file=sys.stderr)
    print(f"mile-ros collect: {progress.ended} episodes, {len(progress.recorded)} recorded, "
          f"{len(progress.failed)} failed to record, {progress.total_ticks} ticks, "
          f"{progress.total_interventions} interventions -> {out}/iter{iteration}",
          file=sys.stderr)
    if interrupted:
        return 130
    if failed_rc == 2:
        return 2   # a node refused its configuration (the message above names the parameter)
    return 1 if problem or progress.failed or bad else 0


def _raise_interrupt(*_):
    raise KeyboardInterrupt


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigError as e:
        print(f"mile-ros collect: configuration error: {e}", file=sys.stderr)
        sys.exit(2)
