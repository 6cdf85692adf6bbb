"""The simulated graph of `mile-ros demo`: per robot a policy server and a collection graph.

The policy server runs for the whole demo (it receives every checkpoint over ROS); recorder,
arbiter, sim_human and the simulated arm (with `--image` the sim camera, 64 px, too) run for one
iteration's episodes at a time (lockstep, faster than real time). `collect_all` runs every
robot's iteration side by side.
"""
from __future__ import annotations

import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mile_ros.learning.observations import DEFAULT_IMAGE_SIZE
from mile_ros.params import ros_params_file
from mile_ros.runs import iteration_name
from mile_ros.tools import collect

COLLECT_NODES = ["recorder", "arbiter", "sim_human", "arm"]
SERVER = "policy_server"


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def robot_names(args) -> list[str]:
    """`--robot-name` for one robot, r1..rN for `--robots N`."""
    n = getattr(args, "robots", 1)
    return [args.robot_name.strip("/")] if n == 1 else [f"r{i}" for i in range(1, n + 1)]


def collect_all(graphs: list, iteration: int, show: bool) -> list[dict]:
    """Run iteration `iteration` on every robot at once; each robot's counts, in order."""
    if len(graphs) == 1:
        return [graphs[0].collect(iteration, show)]
    with ThreadPoolExecutor(len(graphs)) as pool:
        futures = [pool.submit(g.collect, iteration, show) for g in graphs]
        return [f.result() for f in futures]


class DemoGraph:
    """One robot: its policy server for the whole run, per iteration the rest of its graph.

    Robot `index` of `robot_names(args)`: with one robot its bags go to `<out>/iter<k>` and its
    logs to `<out>/logs`; with several to `<out>/<robot>/iter<k>` and `<out>/logs/<robot>`. Each
    robot's arm runs its own episode seeds and its person its own random stream
    (`episode_stream`); all share the initial policy and the person's calibration (one seed).
    """

    def __init__(self, args, out: Path, robot_name: str | None = None, index: int = 0):
        self.args, self.out, self.index = args, out, index
        self.robot_name = (robot_name or args.robot_name).strip("/")
        several = getattr(args, "robots", 1) > 1
        self.bags = out / self.robot_name if several else out
        self.logs = out / "logs" / self.robot_name if several else out / "logs"
        self.files = [args.params] if args.params else []
        self.image = bool(getattr(args, "image", False))   # --image: the camera node runs too
        self.server: collect.Graph | None = None
        self.initial: Path | None = None      # the initial policy's checkpoint
        self.running: Path | None = None      # the checkpoint last delivered (None: initial)
        self.graph: collect.Graph | None = None

    def values(self, iteration: int) -> dict[str, dict]:
        a = self.args
        over = collect.node_overrides(True, self.image, str(self.bags), iteration, a.episodes,
                                      realtime_factor=0.0)
        if self.image:   # the frames the policy takes: no resizing anywhere
            over["camera"] = {**over["camera"], "width": DEFAULT_IMAGE_SIZE,
                              "height": DEFAULT_IMAGE_SIZE}
        received = self.out / "received" / (self.robot_name if self.bags != self.out else "")
        over[SERVER] = {**over[SERVER], "checkpoint": str(self.initial or ""),  # allow_unsigned
                        "initial_seed": a.seed, "receive_dir": str(received)}
        # new episodes every round and on every robot (robot k: 500 episode seeds of its own)
        over["arm"]["seed"] = 100_000 * a.seed + 1_000 * iteration + 500 * self.index
        if a.episode_timeout is not None:
            over["arm"]["episode_timeout_s"] = float(a.episode_timeout)
        # the person's belief when mental_model is "policy": the checkpoint the robot runs now
        over["sim_human"] = {"seed": a.seed, "episode_stream": self.index,
                             "target_rate": float(a.intervention_rate),
                             "mental_checkpoint": str(self.running or self.initial or "")}
        if getattr(a, "mental_model", None):
            over["sim_human"]["mental_model"] = a.mental_model
        return collect.resolve_graph(self.files, over)

    def _start(self, nodes: list[str], iteration: int, log_dir: Path) -> collect.Graph:
        log_dir.mkdir(parents=True, exist_ok=True)
        params = ros_params_file(self.values(iteration), log_dir / "params.yaml")
        graph = collect.Graph(nodes, self.robot_name, params, log_dir)
        graph.start()
        return graph

    def start_server(self) -> None:
        self.server = self._start([SERVER], 1, self.logs / SERVER)

    def server_problem(self) -> str | None:
        if self.server is not None and self.server.exited():
            rc = self.server.exited()[SERVER]
            return (f"{self.robot_name}: the policy server exited with status {rc}; end of its "
                    "log:\n"
                    + self.server.log_tail(SERVER))
        return None

    def collect(self, iteration: int, show: bool) -> dict:
        """Run K episodes with the running policy; returns counts from the progress monitor."""
        episodes = self.args.episodes
        progress = None
        nodes = COLLECT_NODES + (["camera"] if self.image else [])
        self.graph = self._start(nodes, iteration, self.logs / iteration_name(iteration))
        problem = None
        try:
            progress = collect.Progress(self.robot_name, episodes, show)
            progress.bar.set_description(f"collect {self.robot_name} iter{iteration}"
                                         if self.bags != self.out else f"collect iter{iteration}")
            arm_done_at = None
            while True:
                progress.spin(0.1)
                problem = self.server_problem()
                exited = self.graph.exited()
                died = {n: rc for n, rc in exited.items() if not (n == "arm" and rc == 0)}
                if died and not problem:
                    node, rc = next(iter(died.items()))
                    problem = (f"{self.robot_name}: node '{node}' exited with status {rc}; end of "
                               "its log:\n"
                               + self.graph.log_tail(node))
                if problem:
                    break
                if "arm" in exited:
                    arm_done_at = arm_done_at or time.monotonic()
                    finished = len(progress.recorded) + len(progress.failed)
                    if finished >= episodes or time.monotonic() - arm_done_at > 20.0:
                        break
        finally:
            self.stop_collection()
            if progress is not None:
                for _ in range(3):
                    progress.spin(0.05)
                progress.close()
        if problem:
            raise RuntimeError(problem)
        recorded = list(progress.recorded)
        if not recorded:
            logs = self.logs / iteration_name(iteration)
            raise RuntimeError(f"{self.robot_name}: no episode of iteration {iteration} was "
                               f"recorded; see the logs in {logs}")
        return {"ticks": sum(int(e.get("ticks", 0)) for e in recorded),
                "interventions": sum(int(e.get("intervention_count", 0)) for e in recorded),
                "episodes": len(recorded), "recorded": recorded, "failed": list(progress.failed),
                "success": sum(bool(e.get("success")) for e in recorded) / len(recorded)}

    def stop_collection(self) -> None:
        if self.graph is not None:
            self._report(self.graph.stop(), self.graph)
            self.graph = None

    def stop(self) -> None:
        self.stop_collection()
        if self.server is not None:
            self._report(self.server.stop(), self.server)
            self.server = None

    @staticmethod
    def _report(codes: dict, graph) -> None:
        for node, rc in codes.items():
            if rc not in (0, -signal.SIGINT):
                say(f"mile-ros demo: node '{node}' stopped with status {rc} "
                    f"(log: {graph.log_dir / (node + '.log')})")


def recorded_policies(recorded: list[dict]) -> str:
    ids = []
    for event in recorded:
        pid = event.get("policy_checkpoint_id") or "?"
        if pid not in ids:
            ids.append(pid)
    return ",".join(ids)
