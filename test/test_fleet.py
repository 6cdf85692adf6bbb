"""A fleet over real DDS: one trainer, several robots' policy servers (separate processes).

`train --robot-name A B C` delivers to every named robot and names each answer: one accepts, one
refuses (no key to check the signature with), one has no policy server; the exit status is the
refusal's. A refusal outranks a missing answer, a missing answer outranks acceptance.

Late start: a checkpoint_store (the trainer machine's node) offers the newest checkpoint, signed;
a policy server started after it -- and again after each restart -- runs it from its first
episode; one that runs something newer refuses it as older; a server that takes only signed
checkpoints refuses an unsigned store's. A server started while `train` still waits gets the
delivery from its transient-local history.
"""
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from mile_ros.learning.checkpoint import checkpoint_to_bytes, verify_checkpoint
from mile_ros.policy import delivery, signing
from mile_ros.tools import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support.ros_graph import (  # noqa: E402
    Watcher,
    latest_of,
    log_stamp,
    start_server,
    start_store,
    stop,
)
from support.train_helpers import simulate_episode, write_external_bag  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PID = os.getpid()
OK, BAD, GONE = f"fleet_ok_{PID}", f"fleet_bad_{PID}", f"fleet_gone_{PID}"
LATE, NEWER, STRICT, WAITING = (f"fleet_{n}_{PID}" for n in ("late", "newer", "strict", "wait"))
FAST = ["--epochs-scale", "0.05", "--no-progress"]
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fleet")
    write_external_bag(tmp / "run" / "iter1" / "ep0", simulate_episode(seed=5, max_ticks=40))
    assert train.main(["--bags", str(tmp / "run" / "iter1"), "--no-deliver", *FAST]) == 0
    root = tmp / "run" / "checkpoints"
    a_dir = latest_of(root)
    key_file = tmp / "fleet.key"
    key_file.write_text(secrets.token_hex(32) + "\n")
    key_file.chmod(0o600)
    watcher = Watcher([OK, BAD, GONE, LATE, NEWER, STRICT, WAITING])
    try:
        yield {"tmp": tmp, "bags": tmp / "run" / "iter1", "root": root, "a_dir": a_dir,
               "key_file": key_file, "watcher": watcher}
    finally:
        watcher.close()


@pytest.fixture(scope="module")
def newest(fleet):
    """B, the newest checkpoint under the run's root (`latest`); C, saved after it elsewhere."""
    bags, tmp = str(fleet["bags"]), fleet["tmp"]
    assert train.main(["--bags", bags, "--seed", "1", "--no-deliver", *FAST]) == 0
    b_dir = latest_of(fleet["root"])
    assert b_dir != fleet["a_dir"]
    assert train.main(["--bags", bags, "--out", str(tmp / "later"), "--init", "none", "--seed",
                       "2", "--no-deliver", *FAST]) == 0
    return {"b_dir": b_dir, "b_id": verify_checkpoint(b_dir)["id"],
            "c_dir": latest_of(tmp / "later")}


def test_the_exit_status_ranks_refused_over_no_answer_over_accepted():
    status = delivery.fleet_status
    assert status([0, 0]) == 0 and status([0]) == 0
    assert status([0, delivery.EXIT_NO_ANSWER]) == delivery.EXIT_NO_ANSWER == 4
    assert status([delivery.EXIT_NO_ANSWER, delivery.EXIT_REFUSED, 0]) == delivery.EXIT_REFUSED
    said = []
    answers = {"a": delivery.Answer("pending", "validated", 0.4),
               "b": delivery.Answer("active", "already running it", 0.3),
               "c": delivery.Answer("none", "no policy server answered on /c/policy/active")}
    assert delivery.report_answers(answers, "X", said.append) == 4
    assert said[0].startswith("a: policy server accepted X after 0.40 s")
    assert said[1].startswith("b: policy server accepted X") and "already runs it" in said[1]
    assert said[2].startswith("c: WARNING: no policy server answered on /c/policy/active")
    assert said[3] == "delivered X to 3 robots: a accepted, b accepted, c no answer " \
                      "(exit status 4)"


def test_train_delivers_to_every_named_robot_and_names_each_answer(fleet):
    tmp, watcher, a_dir = fleet["tmp"], fleet["watcher"], fleet["a_dir"]
    a_id = verify_checkpoint(a_dir)["id"]
    ok = start_server(tmp, OK, a_dir, key_file=fleet["key_file"])
    bad = start_server(tmp, BAD, a_dir)        # no key: a signed checkpoint is refused
    try:
        for robot in (OK, BAD):
            watcher.wait_for(robot, lambda a: a["state"] == "active" and a["id"] == a_id,
                             what="the configured checkpoint running")
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "mile_ros.cli", "train", "--bags",
                            str(fleet["bags"]), "--only", "--out", str(tmp / "multi"), "--init",
                            "none", "--robot-name", OK, BAD, GONE, "--wait-ack", "20",
                            "--key-file", str(fleet["key_file"]), *FAST],
                           cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                           capture_output=True, text=True, timeout=400)
        took = time.monotonic() - t0
        err = r.stderr
        assert r.returncode == delivery.EXIT_REFUSED, err[-4000:]
        new_id = verify_checkpoint(latest_of(tmp / "multi"))["id"]
        assert f"on /{OK}/policy/checkpoint, /{BAD}/policy/checkpoint, /{GONE}/policy/" \
               f"checkpoint; waiting up to 20 s for the 3 robots' policy servers" in err, err
        assert f"train: {OK}: policy server accepted {new_id} after " in err, err[-4000:]
        assert re.search(rf"train: {BAD}: policy server REFUSED {new_id} after [\d.]+ s: "
                         rf"SignatureError: bad signature: .*no checkpoint_key_file.*; it keeps "
                         rf"running {a_id}", err), err[-4000:]
        assert f"train: {GONE}: WARNING: no policy server answered on /{GONE}/policy/active " \
               f"within 20 s" in err, err[-4000:]
        assert f"delivered {new_id} to 3 robots: {OK} accepted, {BAD} REFUSED, {GONE} no " \
               f"answer (exit status 1)" in err, err[-4000:]
        seconds = {m.group(1): float(m.group(2)) for m in re.finditer(
            r"train: (\S+): policy server (?:accepted|REFUSED) \S+ after ([\d.]+) s", err)}
        print(f"\nmulti-robot delivery: answers after {seconds} s (from publishing); "
              f"train took {took:.1f} s in all (20 s of it waiting for {GONE})")
        # the one that accepted runs it (it had taken no observation: at once); the other kept A
        watcher.wait_for(OK, lambda a: a["state"] == "active" and a["id"] == new_id,
                         what="the new checkpoint running")
        assert watcher.heard[BAD][-1][1]["id"] == a_id
        # without a refusal, a missing answer decides: 4; the one that runs it says so
        answers = delivery.deliver(latest_of(tmp / "multi"), new_id, [OK, GONE], 5.0,
                                   key=fleet["key_file"].read_text().strip().encode(),
                                   say=lambda m: None)
        assert answers[OK].state == "active" and "already running it" in answers[OK].reason
        assert answers[GONE].state == "none"
        assert delivery.report_answers(answers, new_id, lambda m: None) == 4
    finally:
        for proc in (ok, bad):
            stop(proc)


def test_a_server_started_or_restarted_after_the_delivery_runs_the_newest_checkpoint(fleet,
                                                                                     newest):
    """A signed store offers B; a server configured with A (and the key) runs B, run after run."""
    tmp, watcher, a_dir, b_id = fleet["tmp"], fleet["watcher"], fleet["a_dir"], newest["b_id"]
    store = start_store(tmp, f"store_signed_{PID}", [LATE, NEWER], fleet["root"],
                        fleet["key_file"])
    figures = []
    try:
        for run in range(3):          # the first start, then two restarts
            t0 = time.monotonic()
            server = start_server(tmp, LATE, a_dir, key_file=fleet["key_file"])
            try:
                when, _ = watcher.wait_for(
                    LATE, lambda a: a["state"] == "active" and a["id"] == b_id, since=t0,
                    what="the store's checkpoint running")
            finally:
                stop(server)
            up = log_stamp(server.log, "policy_server: active policy", run + 1)
            running = log_stamp(server.log, f"checkpoint {b_id} active from the first episode",
                                run + 1)
            figures.append((when - t0, running - up))
            assert when - t0 < 120
        log = server.log.read_text()
        assert log.count("signature verified") >= 3, log[-3000:]
        store_log = store.log.read_text()
        assert re.search(rf"{LATE}: pending {b_id}: .*signature verified", store_log), \
            store_log[-3000:]
        assert fleet["key_file"].read_text().strip() not in store_log + log
        size = len(checkpoint_to_bytes(newest["b_dir"])) / 1e6
        print(f"\nlate start ({size:.2f} MB checkpoint): process start -> the newest "
              "checkpoint active (watcher) "
              + ", ".join(f"{t:.2f} s" for t, _ in figures)
              + "; node up -> active (server log) " + ", ".join(f"{u:.2f} s" for _, u in figures))

        # a server that already runs something newer (C) refuses B as older and keeps C
        c_id = verify_checkpoint(newest["c_dir"])["id"]
        t0 = time.monotonic()
        server = start_server(tmp, NEWER, newest["c_dir"], key_file=fleet["key_file"])
        try:
            when, refused = watcher.wait_for(NEWER, lambda a: a["state"] == "refused", since=t0,
                                          what="B refused as older")
            assert refused["id"] == b_id and f"older than {c_id}" in refused["reason"], refused
            watcher.wait_for(NEWER, lambda a: a["state"] == "active", since=when)
            assert watcher.heard[NEWER][-1][1]["id"] == c_id
        finally:
            stop(server)
    finally:
        stop(store)


def test_a_server_that_takes_only_signed_checkpoints_refuses_an_unsigned_stores(fleet, newest):
    tmp, watcher, a_dir = fleet["tmp"], fleet["watcher"], fleet["a_dir"]
    a_id = verify_checkpoint(a_dir)["id"]
    store = start_store(tmp, f"store_unsigned_{PID}", [STRICT], fleet["root"])
    try:
        t0 = time.monotonic()
        server = start_server(tmp, STRICT, a_dir, key_file=fleet["key_file"])
        try:
            when, refused = watcher.wait_for(STRICT, lambda a: a["state"] == "refused", since=t0,
                                          what="the unsigned checkpoint refused")
            assert refused["id"] == newest["b_id"], refused
            assert refused["reason"].startswith("SignatureError: unsigned checkpoint"), refused
            watcher.wait_for(STRICT, lambda a: a["state"] == "active", since=when)
            assert watcher.heard[STRICT][-1][1]["id"] == a_id
        finally:
            stop(server)
        assert f"{STRICT}: refused {newest['b_id']}: SignatureError: unsigned" in \
            store.log.read_text()
    finally:
        stop(store)


def test_a_server_started_while_train_still_waits_gets_the_delivery(fleet, newest):
    """The delivery is transient local: a server that starts after it was sent still gets it."""
    tmp, key = fleet["tmp"], fleet["key_file"].read_text().strip().encode()
    data = checkpoint_to_bytes(newest["b_dir"])
    sender = delivery.CheckpointSender(WAITING)
    published, result = threading.Event(), {}
    publish = sender.pub.publish

    def publish_and_tell(msg):
        publish(msg)
        published.set()
    sender.pub.publish = publish_and_tell

    def send():
        result["answer"] = sender.send(data, newest["b_id"], 180.0, signing.sign(data, key))
        result["at"] = time.monotonic()
    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    server = None
    try:
        assert published.wait(60), "the sender did not publish"
        t0 = time.monotonic()
        server = start_server(tmp, WAITING, fleet["a_dir"], key_file=fleet["key_file"])
        thread.join(timeout=200)
        answer = result["answer"]
        assert answer.state == "pending" and "signature verified" in answer.reason, answer
        print(f"\nserver started after the send: answered {result['at'] - t0:.2f} s after its "
              f"process start")
        fleet["watcher"].wait_for(WAITING, lambda a: a["state"] == "active"
                                  and a["id"] == newest["b_id"], since=t0)
    finally:
        thread.join(timeout=5)
        sender.close()
        if server is not None:
            stop(server)
