"""`mile-ros demo` end to end on a tiny setting (real node processes, real DDS, real bags).

The table and the PNG; the next iteration's episodes ran the checkpoint delivered over ROS; Ctrl-C
stops every node and still writes what was measured.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--episodes", "1", "--eval-episodes", "2", "--episode-timeout", "1.5",
        "--epochs-scale", "0.05", "--no-progress"]


def demo(*args, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "mile_ros.cli", "demo", *map(str, args)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, **kw)


def test_tiny_demo_prints_the_table_and_writes_the_plot(tmp_path):
    out = tmp_path / "demo"
    p = demo("--iterations", 2, "--out", out, "--robot-name", "demo_test", "--compare",
             "hg-dagger", "--mental-model", "policy", "--set", "nll_beta=0.25", *TINY)
    _, err = p.communicate(timeout=240)
    assert p.returncode == 0, err[-4000:]
    assert "Traceback" not in err
    table = err[err.rindex("iter  policy"):].splitlines()
    assert len([line for line in table[1:] if line[:4].strip().isdigit()]) == 3   # iterations 0-2
    assert table[0].split()[-1] == "hg-dagger"                  # the baseline's column

    result = json.loads((out / "demo.json").read_text())
    rows = result["rows"]
    assert result["complete"] and [r["iteration"] for r in rows] == [0, 1, 2]
    # --set: over the demo's training options, recorded, and what the checkpoints trained with
    assert result["settings"]["training"]["nll_beta"] == 0.25
    assert result["settings"]["training"]["policy_anchor"] == 0.1
    latest = out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip()
    manifest = json.loads((latest / "manifest.json").read_text())
    assert manifest["config"]["nll_beta"] == 0.25, manifest["config"]
    assert manifest["config"]["ema"] == 0.999, manifest["config"]
    # --train-from initial (the default): every iteration starts from the initial policy
    (metrics,) = (out / "checkpoints").glob("iter2-*.metrics.json")
    metrics = json.loads(metrics.read_text())
    assert Path(metrics["init"]).name == "iter0-initial", metrics["init"]
    assert metrics["budget"]["epochs_over"] == "all", metrics["budget"]
    assert all(0.0 <= r["success"] <= 1.0 and r["eval_episodes"] == 2 for r in rows)
    for r in rows[1:]:
        assert r["episodes"] == 1 and 20 <= r["ticks"] <= 30      # 1.5 s at 20 Hz (ticks that
        #                                 lack a_r, e.g. taken over at once, are not training data)
        assert 0 <= r["interventions"] <= r["ticks"] and r["swap"] in ("pending", "active")
        assert r["train_s"] > 0 and r["compare_train_s"] > 0
    # --compare: the baseline starts where MILE does and is evaluated on the same episodes
    assert rows[0]["compare"] == {"hg-dagger": rows[0]["success"]}
    assert all(set(r["compare"]) == {"hg-dagger"} and 0 <= r["compare"]["hg-dagger"] <= 1
               for r in rows)
    # the hot swap: each iteration's episode ran the checkpoint trained just before it
    assert rows[1]["collected_with"] == rows[0]["policy"]
    assert rows[2]["collected_with"] == rows[1]["policy"]
    for r in rows:
        assert r["policy"][:12] in err
    # --mental-model policy: each iteration's person believes the checkpoint the robot runs
    for it in (1, 2):
        log = (out / "logs" / f"iter{it}" / "sim_human.log").read_text()
        assert f"mental model: policy {rows[it - 1]['policy']}" in log, log[-2000:]

    png = (out / "demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert sorted(p.name for p in out.glob("iter*")) == ["iter1", "iter2"]
    assert (out / "checkpoints" / "latest").read_text().strip().startswith("iter2-")

    # bad arguments: a clear message, nothing started, the earlier run untouched
    p = demo("--iterations", 0, "--out", out, *TINY)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "--iterations must be >= 1" in err and "Traceback" not in err
    p = demo("--compare", "dagger", "--out", out, *TINY)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "--compare: unknown baseline(s) dagger" in err, err
    assert "hg-dagger" in err and "Traceback" not in err           # the known names are listed
    p = demo("--set", "nll_beta=2", "--out", out, *TINY)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "--set: " in err and "MileConfig.nll_beta must be in [0, 1]" \
        in err and "Traceback" not in err, err
    p = demo("--train-from", "scratch", "--out", out, *TINY)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "--train-from" in err and "'latest', 'initial'" in err, err
    assert (out / "demo.json").is_file()


def test_two_robots_collect_side_by_side_and_share_one_trainer(tmp_path):
    out = tmp_path / "fleet"
    p = demo("--iterations", 2, "--robots", 2, "--out", out, "--train-from", "latest", *TINY)
    _, err = p.communicate(timeout=400)
    assert p.returncode == 0, err[-4000:]
    rows = json.loads((out / "demo.json").read_text())["rows"]
    assert [r["iteration"] for r in rows] == [0, 1, 2] and rows[0]["robots"] == {}
    for prev, r in zip(rows, rows[1:]):
        assert set(r["robots"]) == {"r1", "r2"}
        assert r["episodes"] == sum(f["episodes"] for f in r["robots"].values()) == 2
        assert r["ticks"] == sum(f["ticks"] for f in r["robots"].values())
        # both robots ran the checkpoint trained just before, on both robots' bags
        assert {f["collected_with"] for f in r["robots"].values()} == {prev["policy"]}
    for robot in ("r1", "r2"):
        assert sorted(p.name for p in (out / robot).glob("iter*")) == ["iter1", "iter2"]
        assert len(list((out / robot / "iter1").glob("episode_*"))) == 1
    (metrics,) = (out / "checkpoints").glob("iter1-*.metrics.json")
    data = json.loads(metrics.read_text())
    assert data["data"]["episodes"] == 2 and data["bags_used"] == 2, data
    (metrics,) = (out / "checkpoints").glob("iter2-*.metrics.json")
    data = json.loads(metrics.read_text())
    assert data["data"]["episodes"] == 4                         # iterations 1 and 2
    # --train-from latest: iteration 2 starts from iteration 1's checkpoint, over its new ticks
    assert Path(data["init"]).name.startswith("iter1-"), data["init"]
    assert data["budget"]["epochs_over"] == "new", data["budget"]
    assert json.loads((out / "demo.json").read_text())["settings"]["train_from"] == "latest"
    table = err[err.rindex("iter  policy"):]
    assert "  r1  " in table and "  r2  " in table                  # per-robot lines


def test_ctrl_c_stops_every_node_and_keeps_the_results(tmp_path):
    out = tmp_path / "demo"
    p = demo("--iterations", 3, "--out", out, "--robot-name", "demo_sigint", *TINY)
    log = out / "logs" / "iter1" / "arm.log"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "episode 0 ended" not in (
            log.read_text() if log.exists() else ""):
        time.sleep(0.2)
    assert p.poll() is None, p.communicate()[1][-3000:]
    os.kill(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=90)
    assert p.returncode == 130, err[-3000:]
    assert "interrupted" in err and "Traceback" not in err
    # no node of the demo outlives it (they run in its process group's children)
    leftover = subprocess.run(["pgrep", "-f", "__ns:=/demo_sigint"], capture_output=True,
                              text=True).stdout.split()
    assert leftover == []
    result = json.loads((out / "demo.json").read_text())
    assert not result["complete"] and result["rows"][0]["iteration"] == 0
    assert (out / "demo.png").exists()


def test_tiny_image_demo_records_frames_and_trains_an_image_policy(tmp_path):
    """`--image`: about 20 s here with the initial policies cached (their first build: +25 s)."""
    from mile_ros.bags import load_episodes
    from mile_ros.learning.checkpoint import load_checkpoint

    out = tmp_path / "demo"
    p = demo("--image", "--iterations", 1, "--out", out, "--robot-name", "demo_image", *TINY)
    _, err = p.communicate(timeout=240)
    assert p.returncode == 0, err[-4000:]
    assert "Traceback" not in err and "image (64 px) + end-effector policy" in err
    rows = json.loads((out / "demo.json").read_text())["rows"]
    assert [r["iteration"] for r in rows] == [0, 1] and 20 <= rows[1]["ticks"] <= 30
    assert rows[1]["collected_with"] == rows[0]["policy"]      # the image initial policy drove
    # seed 0's person takes over; the arm then runs ahead of the camera, and every tick still gets
    # its a_r (observations wait for their frames in order; one slot dropped 21 of 30 here)
    assert rows[1]["interventions"] >= 10, rows[1]
    log = (out / "logs" / "policy_server" / "policy_server.log").read_text()
    assert "no_image=0 " in log, log[-2000:]
    # the sim camera's frames are in the bags: one per tick, stamped with it, at 64 px
    (episode,), _ = load_episodes([out / "iter1"], images=True, progress=False)
    assert episode.images.shape == (len(episode), 64, 64, 3)
    assert (episode.image_stamps == episode.stamps).all()
    # both checkpoints take the frame and the end-effector position
    for name in ("iter0-initial", (out / "checkpoints" / "latest").read_text().strip()):
        model = load_checkpoint(out / "checkpoints" / name)
        assert model.obs_spec.image_shape == (64, 64, 3)
        assert model.obs_spec.state_names == ("ee_x", "ee_y", "ee_z")
        assert model.policy.trunk.encoder.kind == "patch"
