"""Across machines: a trainer on a second "host" delivers a checkpoint of >= 5 MB over DDS.

The second host is a network namespace that the test makes itself: one end of a veth pair in it
(10.231.<k>.2/24), the other end here (10.231.<k>.1/24), both ends and the namespace's loopback
up; all of it is removed at the end, also when a test fails. Where `ip netns` is not permitted
(not root, no CAP_SYS_ADMIN / CAP_NET_ADMIN, no iproute2) the tests are skipped, the reason
printed (`pytest -rs`). Run on its own: `pytest -m netns -rs -s`.

- The station: a policy server here that takes signed checkpoints only, with a directory of its
  own (its first checkpoint, its copy of the key, receive_dir, ROS logs). The trainer: `python -m
  mile_ros.cli train --robot-name R --key-file K` under `ip netns exec`, on bags in its own
  directory, writing its checkpoints there. No file is shared: the checkpoint reaches the station
  only over DDS, and the station's unpacked copy in its receive_dir has the trainer's bytes.
- No shortcut: two network namespaces of one machine share /dev/shm, so both processes run with
  Fast DDS's shared-memory transport off (FASTDDS_BUILTIN_TRANSPORTS=UDPv4), and the veth's end
  here counts the bytes that crossed it: at least the checkpoint's, each delivery. Negative
  control: with the namespace's end of the veth down, the same `train` discovers no policy server
  (exit 4, 0 subscribers) and the station hears nothing of that checkpoint.
- Discovery without multicast: each side names the other in ROS_STATIC_PEERS; the trainer keeps
  the default range (ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET), the station uses LOCALHOST (no
  multicast at all: its static peer and this machine only) -- the settings README "Fleet" gives.
- Measured over 3 deliveries of an 8.8 MB checkpoint (`--set hidden=[1024,1024]`): the
  checkpoint's files written (their newest mtime) -> the station's "pending" on policy/active,
  and train's own publish -> answer. The issue's target (median written -> pending <= 2 s) is
  printed, not asserted: the bound asserted is generous (CI runs on 2 loaded cores).
"""
import hashlib
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mile_ros.learning.checkpoint import checkpoint_to_bytes, verify_checkpoint
from mile_ros.policy import delivery
from mile_ros.tools import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support.ros_graph import ROOT, Watcher, latest_of, start_server, stop  # noqa: E402
from support.train_helpers import simulate_episode, write_external_bag  # noqa: E402

pytestmark = pytest.mark.netns
PID = os.getpid()
ROBOT = f"netns_{PID}"
NETNS, HOST_IF, NS_IF = f"mile_netns_{PID}", f"mlh{PID}", f"mln{PID}"   # link names <= 15
FAST = ["--epochs-scale", "0.05", "--no-progress"]
BIG = ["--set", "hidden=[1024, 1024]"]      # policy and mental model: an 8.8 MB checkpoint
MIN_BYTES = 5_000_000
DELIVERIES = 3
WRITTEN_TO_PENDING_BOUND_S = 60.0           # generous; the target (a median <= 2 s) is printed
torch.set_num_threads(1)


def ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=60)


def free_subnet() -> int:
    """Return k such that nothing here uses 10.231.k.0/24 (routes or addresses)."""
    used = ip("-4", "route", "show", "table", "all").stdout + ip("-4", "addr", "show").stdout
    for i in range(200):
        k = 20 + (PID + i) % 200
        if f"10.231.{k}." not in used:
            return k
    raise AssertionError(f"no free 10.231.k.0/24 subnet: {used}")


def rx_bytes(link: str) -> int:
    return int(Path(f"/sys/class/net/{link}/statistics/rx_bytes").read_text())


def udp_rcvbuf_errors() -> int:
    """Return this namespace's count of UDP datagrams dropped for a full receive buffer."""
    rows = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
            if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


def wait_until(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.05)


def operstate(link: str) -> str:
    return Path(f"/sys/class/net/{link}/operstate").read_text().strip()


@pytest.fixture(scope="module")
def second_host():
    """Make the network namespace and its veth pair; skip, with the reason, where not allowed."""
    why = "network-namespace test skipped: "
    if shutil.which("ip") is None:
        pytest.skip(why + "no `ip` command (iproute2)")
    if os.geteuid() != 0:
        pytest.skip(why + "not root (`ip netns` needs CAP_SYS_ADMIN and CAP_NET_ADMIN)")
    k = free_subnet()
    host_ip, ns_ip = f"10.231.{k}.1", f"10.231.{k}.2"
    made = False
    try:
        r = ip("netns", "add", NETNS)
        if r.returncode:
            pytest.skip(why + f"`ip netns add` is not permitted here: {r.stderr.strip()}")
        made = True
        for step in (("link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF),
                     ("link", "set", NS_IF, "netns", NETNS),
                     ("addr", "add", f"{host_ip}/24", "dev", HOST_IF),
                     ("link", "set", HOST_IF, "up"),
                     ("-n", NETNS, "addr", "add", f"{ns_ip}/24", "dev", NS_IF),
                     ("-n", NETNS, "link", "set", NS_IF, "up"),
                     ("-n", NETNS, "link", "set", "lo", "up")):
            r = ip(*step)
            if r.returncode:
                pytest.skip(why + f"`ip {' '.join(step)}` failed: {r.stderr.strip()}")
        r = subprocess.run(["ip", "netns", "exec", NETNS, sys.executable, "-c", "pass"],
                           capture_output=True, text=True, timeout=120)
        if r.returncode:
            pytest.skip(why + f"`ip netns exec` failed: {r.stderr.strip()}")
        wait_until(lambda: operstate(HOST_IF) == "up", 30, f"{HOST_IF} up")
        yield {"host_ip": host_ip, "ns_ip": ns_ip}
    finally:
        if made:
            ip("netns", "del", NETNS)        # takes the veth pair with it
        if Path(f"/sys/class/net/{HOST_IF}").exists():
            ip("link", "del", HOST_IF)


def dds_env(home: Path, discovery_range: str, peer: str) -> dict:
    """Return a process's environment: UDPv4 only, unicast discovery of `peer`, own ROS logs."""
    return dict(os.environ, PYTHONPATH=str(ROOT), FASTDDS_BUILTIN_TRANSPORTS="UDPv4",
                ROS_AUTOMATIC_DISCOVERY_RANGE=discovery_range, ROS_STATIC_PEERS=peer,
                ROS_LOG_DIR=str(home / "ros_log"))


@pytest.fixture(scope="module")
def station(second_host, tmp_path_factory):
    """Start the station (here) and fill the trainer's directory (for the second host)."""
    base = tmp_path_factory.mktemp("netns")
    home, trainer = base / "station", base / "trainer"
    key = secrets.token_hex(32) + "\n"
    for d in (home, trainer):            # each machine its own copy of the key
        d.mkdir()
        (d / "checkpoint.key").write_text(key)
        (d / "checkpoint.key").chmod(0o600)
    write_external_bag(home / "run" / "iter1" / "ep0", simulate_episode(seed=6, max_ticks=40))
    assert train.main(["--bags", str(home / "run" / "iter1"), "--no-deliver", *FAST]) == 0
    first = latest_of(home / "run" / "checkpoints")
    first_id = verify_checkpoint(first)["id"]
    write_external_bag(trainer / "run" / "iter1" / "ep0", simulate_episode(seed=5, max_ticks=40))
    watcher = Watcher([ROBOT])
    server = start_server(home, ROBOT, first, key_file=home / "checkpoint.key",
                          env=dds_env(home, "LOCALHOST", second_host["ns_ip"]))
    try:
        watcher.wait_for(ROBOT, lambda a: a["state"] == "active" and a["id"] == first_id,
                         what="the station's first policy running")
        yield {"home": home, "trainer": trainer, "watcher": watcher, "server": server,
               "received": home / f"received_{ROBOT}"}
    finally:
        stop(server)
        watcher.close()


def train_on_second_host(host: dict, st: dict, seed: int, wait_ack: float = 30.0):
    """Run `train` in the network namespace; return (CompletedProcess, its newest checkpoint)."""
    trainer = st["trainer"]
    cmd = ["ip", "netns", "exec", NETNS, sys.executable, "-m", "mile_ros.cli", "train",
           "--bags", str(trainer / "run" / "iter1"), "--only", "--out",
           str(trainer / "checkpoints"), "--init", "none", "--seed", str(seed), "--robot-name",
           ROBOT, "--key-file", str(trainer / "checkpoint.key"), "--wait-ack", f"{wait_ack:g}",
           *BIG, *FAST]
    r = subprocess.run(cmd, cwd=trainer, env=dds_env(trainer, "SUBNET", host["host_ip"]),
                       capture_output=True, text=True, timeout=600)
    assert "trained in" in r.stderr, r.stderr[-4000:]
    return r, latest_of(trainer / "checkpoints")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_trainer_in_another_network_namespace_delivers_a_5_mb_checkpoint(second_host, station):
    watcher, figures = station["watcher"], []
    for n in range(DELIVERIES):
        rx0, drops0, t0 = rx_bytes(HOST_IF), udp_rcvbuf_errors(), time.monotonic()
        r, ckpt = train_on_second_host(second_host, station, seed=n + 1)
        crossed, drops = rx_bytes(HOST_IF) - rx0, udp_rcvbuf_errors() - drops0
        err = r.stderr
        assert r.returncode == 0, err[-4000:]
        cid, size = verify_checkpoint(ckpt)["id"], len(checkpoint_to_bytes(ckpt))
        assert size >= MIN_BYTES, size
        said = re.search(rf"train: {ROBOT}: policy server accepted {re.escape(cid)} after "
                         rf"([\d.]+) s: it runs from the next episode start \(validated .*"
                         rf"signature verified", err)
        assert said, err[-4000:]
        when, _ = watcher.wait_for(ROBOT, lambda a: a["state"] == "pending" and a["id"] == cid,
                                   since=t0, what=f"{cid} pending")
        pending_at = time.time() - (time.monotonic() - when)     # wall clock, as the mtimes
        written_at = max(f.stat().st_mtime for f in ckpt.iterdir())
        # it had taken no observation: it runs the new checkpoint at once
        watcher.wait_for(ROBOT, lambda a: a["state"] == "active" and a["id"] == cid, since=when,
                         what=f"{cid} active")
        copy = station["received"] / ckpt.name      # unpacked from the bytes DDS brought
        assert verify_checkpoint(copy)["id"] == cid
        assert digest(copy / "weights.pt") == digest(ckpt / "weights.pt")
        assert crossed >= size, f"only {crossed} bytes crossed the veth for {size}"
        figures.append({"written_to_pending": pending_at - written_at,
                        "publish_to_answer": float(said.group(1)), "bytes": size,
                        "veth_bytes": crossed, "rcvbuf_drops": drops})
    w2p = [f["written_to_pending"] for f in figures]

    def each(key, fmt="{:.2f}", scale=1.0):
        return ", ".join(fmt.format(f[key] * scale) for f in figures)
    print(f"\ncross-namespace delivery, {DELIVERIES} runs of train in {NETNS} (UDPv4 only, over "
          f"the veth): checkpoint {each('bytes', '{:.0f}')} bytes; written -> pending "
          f"{each('written_to_pending')} s (median {statistics.median(w2p):.2f} s; target <= 2 "
          f"s); publish -> answer (train) {each('publish_to_answer')} s; over the veth "
          f"{each('veth_bytes', '{:.1f}', 1e-6)} MB; UDP receive-buffer drops here "
          f"{each('rcvbuf_drops', '{:.0f}')}")
    assert all(0 < t < WRITTEN_TO_PENDING_BOUND_S for t in w2p), w2p


def test_negative_control_without_the_link_nothing_arrives(second_host, station):
    """SHM is off and the veth is down: no other path is left, and nothing arrives."""
    watcher = station["watcher"]
    r = ip("-n", NETNS, "link", "set", NS_IF, "down")
    assert r.returncode == 0, r.stderr
    try:
        wait_until(lambda: operstate(HOST_IF) != "up", 30, f"{HOST_IF} without its peer")
        rx0, t0 = rx_bytes(HOST_IF), time.monotonic()
        r, ckpt = train_on_second_host(second_host, station, seed=99, wait_ack=15)
        crossed, err = rx_bytes(HOST_IF) - rx0, r.stderr
        assert r.returncode == delivery.EXIT_NO_ANSWER, err[-4000:]
        assert f"train: {ROBOT}: WARNING: no policy server answered on /{ROBOT}/policy/active " \
               f"within 15 s (0 subscribers to /{ROBOT}/policy/checkpoint)" in err, err[-4000:]
        cid = verify_checkpoint(ckpt)["id"]
        assert not [a for when, a in watcher.heard[ROBOT] if when >= t0 and a.get("id") == cid]
        assert not (station["received"] / ckpt.name).exists()
        assert crossed == 0, crossed
        print(f"\nnegative control (veth down, SHM off): train exit {r.returncode}, no answer in "
              f"15 s, 0 subscribers discovered, {crossed} bytes over the veth")
    finally:
        ip("-n", NETNS, "link", "set", NS_IF, "up")
