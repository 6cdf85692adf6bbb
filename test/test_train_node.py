"""The trainer on real bags.

A short simulated collection (this package's recorder) and a bag written directly with rosbags
as `ros2 bag record` would have (absolute topic names, no custom metadata); the checkpoint loads
in the policy server; iter* aggregation vs --only; bad inputs give a clear message naming the
file, never a traceback; no policy server -> saved, reported.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mile_ros.policy.serving import check_compatible, initial_policy, load_policy_dir
from mile_ros.tools import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support.train_helpers import simulate_episode, write_external_bag  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--epochs-scale", "0.05", "--no-progress", "--no-deliver"]
torch.set_num_threads(1)


def cli(*args, timeout=240):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "mile_ros.cli", *map(str, args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def metrics_of(root: Path) -> dict:
    name = (root / "latest").read_text().strip()
    return json.loads((root / f"{name}.metrics.json").read_text())


@pytest.fixture(scope="module")
def episodes():
    """Three short simulated episodes of 20, 30 and 40 ticks (and one with camera frames)."""
    return {n: simulate_episode(seed=n, max_ticks=n) for n in (20, 30, 40)}


def external_run(root: Path, episodes) -> Path:
    """Write run/iter1..3, one `ros2 bag record`-style bag each (20, 30, 40 ticks).

    Plus an unrelated dir.
    """
    for i, n in enumerate((20, 30, 40), start=1):
        (root / f"iter{i}").mkdir(parents=True)
        write_external_bag(root / f"iter{i}" / f"rosbag2_{i}", episodes[n], episode_index=i,
                           storage="sqlite3" if i % 2 else "mcap")
    (root / "other").mkdir()
    write_external_bag(root / "other" / "rosbag2_x", episodes[20])
    return root


def test_trains_on_a_short_simulated_collection(tmp_path):
    params = tmp_path / "short.yaml"
    params.write_text("arm:\n  ros__parameters:\n    episode_timeout_s: 2.0\n")
    run = tmp_path / "run"
    r = cli("collect", "--sim", "--episodes", 2, "--out", run / "iter1", "--realtime-factor", 0,
            "--no-progress", "--robot-name", "train_test", "--params", params, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    bags = sorted(p for p in (run / "iter1").iterdir() if p.is_dir())
    assert len(bags) == 2

    r = cli("train", "--bags", run / "iter1", *FAST)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    m = metrics_of(run / "checkpoints")                 # default --out: beside the iter* dirs
    recorded = [json.loads(line) for line in (run / "iter1" / "recorder_log.jsonl").open()]
    recorded = [e for e in recorded if e["event"] == "episode_recorded"]
    assert m["data"]["episodes"] == 2
    assert m["data"]["ticks"] == sum(e["ticks"] for e in recorded) > 40     # 2 s at 20 Hz each
    assert m["data"]["interventions"] == sum(e["intervention_count"] for e in recorded)
    assert f"data: 2 episodes, {m['data']['ticks']} ticks" in r.stderr
    assert 0.0 <= m["intervention_rate"]["predicted"] <= 1.0
    assert m["intervention_rate"]["observed"] == pytest.approx(
        m["data"]["interventions"] / m["data"]["ticks"])
    assert set(m["timings_s"]) >= {"load", "train", "save"} and m["training"]["updates"] > 0

    # the policy server's own loading and checks accept it against the simulated arm
    policy = load_policy_dir(m["checkpoint"])
    assert policy.id == m["checkpoint_id"]
    from mile_ros.sim.widowx import OBSERVATION_NAMES

    check_compatible(policy, initial_policy(0), OBSERVATION_NAMES)
    assert policy.state_names == OBSERVATION_NAMES     # no warm start: everything recorded
    runner = policy.make_runner()
    a = [runner.step(np.full(len(OBSERVATION_NAMES), 0.1)) for _ in range(5)]
    assert np.all(np.isfinite(a)) and np.shape(a) == (5, 4)


def test_trains_on_a_ros2_bag_record_bag_and_warm_starts(tmp_path, episodes):
    run = external_run(tmp_path / "run", episodes)
    out = tmp_path / "ckpt"
    assert train.main(["--bags", str(run / "iter1"), "--out", str(out), *FAST]) == 0
    first = metrics_of(out)
    assert first["data"] == {"episodes": 1, "ticks": 20, "interventions":
                             int(episodes[20]["nu"].sum()),
                             "intervention_rate": pytest.approx(episodes[20]["nu"].mean())}
    assert first["init"] is None

    # second round: warm start from `latest` (policy and mental model), newer data included
    assert train.main(["--bags", str(run / "iter2"), "--out", str(out), *FAST]) == 0
    second = metrics_of(out)
    assert second["init"] == first["checkpoint"]
    assert second["training"]["warm_start"].startswith("init")
    assert second["data"]["ticks"] == 50 and second["checkpoint_id"] != first["checkpoint_id"]
    from mile_ros.learning.checkpoint import load_checkpoint
    model = load_checkpoint(out)                          # the latest pointer is the new one
    assert model.checkpoint_id == second["checkpoint_id"]
    assert list(model.obs_spec.state_names) == episodes[20]["state_names"]
    assert model.obs_spec.frame_stack == 4


def test_a_warm_start_decides_which_recorded_names_a_state_policy_reads(tmp_path, episodes):
    """The initial policy reads a named part of the observation; training keeps reading it."""
    from mile_ros.learning import ActionSpec, MileConfig, ObsSpec, train_bc
    from mile_ros.learning.checkpoint import load_checkpoint, save_checkpoint

    run = external_run(tmp_path / "run", episodes)
    names = episodes[20]["state_names"]
    part = [names[2], names[3], names[-1]]
    data = [{"state": episodes[20]["state"][:, [names.index(n) for n in part]],
             "a_r": episodes[20]["a_r"]}]
    init = train_bc(data, ObsSpec(part, 4), ActionSpec(episodes[20]["action_names"]),
                    MileConfig(hidden=(16, 16), min_updates=5, max_updates=5, holdout=0.0),
                    target="a_r", progress=False)
    save_checkpoint(init, tmp_path / "init")
    out = tmp_path / "ckpt"
    assert train.main(["--bags", str(run / "iter1"), "--out", str(out), "--init",
                       str(tmp_path / "init"), *FAST]) == 0
    assert metrics_of(out)["training"]["warm_start"].startswith("init")
    assert list(load_checkpoint(out).obs_spec.state_names) == part
    # no warm start: the whole recorded observation
    assert train.main(["--bags", str(run / "iter1"), "--out", str(tmp_path / "fresh"),
                       "--init", "none", *FAST]) == 0
    assert list(load_checkpoint(tmp_path / "fresh").obs_spec.state_names) == names


def test_warm_start_budget_counts_only_the_bags_the_checkpoint_was_not_trained_on(
        tmp_path, episodes):
    run = external_run(tmp_path / "run", episodes)
    out = tmp_path / "ckpt"
    assert train.main(["--bags", str(run / "iter1"), "--out", str(out), *FAST]) == 0
    first = metrics_of(out)
    assert first["trained_on"] == [str((run / "iter1" / "rosbag2_1").resolve())]
    assert first["budget"] == {"epochs_over": "all", "ticks": 20, "new_ticks": 20,
                               "fraction": 1.0}

    assert train.main(["--bags", str(run / "iter2"), "--out", str(out), *FAST]) == 0
    second = metrics_of(out)
    assert second["budget"] == {"epochs_over": "new", "ticks": 50, "new_ticks": 30,
                                "fraction": pytest.approx(30 / 50)}
    assert len(second["trained_on"]) == 2

    # --epochs-over all, and bags the checkpoint does not know (moved), count every tick
    assert train.main(["--bags", str(run / "iter3"), "--out", str(out), "--epochs-over", "all",
                       *FAST]) == 0
    assert metrics_of(out)["budget"]["fraction"] == 1.0
    moved = tmp_path / "moved"
    run.rename(moved)
    assert train.main(["--bags", str(moved / "iter3"), "--out", str(out), *FAST]) == 0
    assert metrics_of(out)["budget"] == {"epochs_over": "new", "ticks": 90, "new_ticks": 90,
                                         "fraction": 1.0}


def test_image_policy_from_camera_frames(tmp_path):
    ep = simulate_episode(seed=5, max_ticks=25, image_size=48)
    write_external_bag(tmp_path / "iter1" / "bag", ep)
    out = tmp_path / "ckpt"
    assert train.main(["--bags", str(tmp_path / "iter1"), "--out", str(out), "--image",
                       "--image-size", "64", *FAST]) == 0
    manifest = json.loads((Path(metrics_of(out)["checkpoint"]) / "manifest.json").read_text())
    assert manifest["networks"]["policy"]["kwargs"]["image_encoder"] == "patch"   # the fast one
    policy = load_policy_dir(metrics_of(out)["checkpoint"])
    assert policy.uses_image and policy.state_names == ["ee_x", "ee_y", "ee_z"]
    a = policy.make_runner().step(np.zeros(3), np.zeros((64, 64, 3), np.uint8))
    assert np.shape(a) == (4,) and np.all(np.isfinite(a))


def test_device_option_falls_back_to_the_cpu_or_names_the_problem(tmp_path, episodes, capsys,
                                                                   monkeypatch):
    """Without CUDA: `--device auto` trains on the CPU and says so; `--device cuda` is exit 2."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    write_external_bag(tmp_path / "iter1" / "ep0", episodes[20])
    out = tmp_path / "ckpt"
    assert train.main(["--bags", str(tmp_path / "iter1"), "--out", str(out), "--device", "auto",
                       *FAST]) == 0
    err = capsys.readouterr().err
    assert "device: cpu (--device auto: no CUDA device available)" in err, err
    m = metrics_of(out)
    assert m["device"] == "cpu" and m["training"]["device"] == "cpu"
    assert load_policy_dir(m["checkpoint"]).make_runner() is not None
    for device in ("cuda", "cuda:0"):
        assert train.main(["--bags", str(tmp_path / "iter1"), "--out", str(tmp_path / "c2"),
                           "--device", device, *FAST]) == 2
        err = capsys.readouterr().err
        assert f"train: error: --device {device}: " in err and "CUDA is not available" in err
        assert "Traceback" not in err and "data:" not in err   # refused before reading bags
    assert train.main(["--bags", str(tmp_path / "iter1"), "--device", "gpu", *FAST]) == 2
    assert "--device gpu: device must be 'cpu', 'cuda'" in capsys.readouterr().err
    assert not (tmp_path / "c2").exists()


def test_aggregation_takes_earlier_iterations_unless_only(tmp_path, episodes, capsys):
    run = external_run(tmp_path / "run", episodes)
    out = tmp_path / "ckpt"
    assert train.main(["--bags", str(run / "iter2"), "--out", str(out), *FAST]) == 0
    used = {Path(p).parent.name for p in metrics_of(out)["bags"]["used"]}
    assert used == {"iter1", "iter2"} and metrics_of(out)["data"]["ticks"] == 50

    assert train.main(["--bags", str(run / "iter3"), "--only", "--out", str(out), *FAST]) == 0
    m = metrics_of(out)
    assert {Path(p).parent.name for p in m["bags"]["used"]} == {"iter3"}
    assert m["data"]["ticks"] == 40

    assert train.main(["--bags", str(run / "iter3"), str(run / "other"), "--init", "none",
                       "--out", str(out), *FAST]) == 0
    m = metrics_of(out)
    assert sorted(Path(p).parent.name for p in m["bags"]["used"]) == \
        ["iter1", "iter2", "iter3", "other"]
    assert m["data"]["ticks"] == 110
    err = capsys.readouterr().err
    assert "data: 4 episodes, 110 ticks" in err


def _corrupt_bag(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "metadata.yaml").write_text("rosbag2_bagfile_information:\n  version: 8\n"
                                        "  storage_identifier: mcap\n  relative_file_paths: "
                                        "[data.mcap]\n")
    (path / "data.mcap").write_bytes(os.urandom(3000))
    return path


def test_bad_inputs_name_the_file_and_the_problem(tmp_path, episodes, capsys):
    wrong = tmp_path / "wrong" / "iter1"
    write_external_bag(wrong / "joy_only", episodes[20], topics={"joy": "sensor_msgs/msg/Joy"})
    typed = tmp_path / "typed" / "iter1"
    write_external_bag(typed / "string_obs", episodes[20],
                       topics={"observation": "std_msgs/msg/String",
                               "action_robot": "sensor_msgs/msg/JointState",
                               "intervention": "sensor_msgs/msg/JointState"})
    (tmp_path / "empty").mkdir()
    cases = {
        "missing": (tmp_path / "nope", "nope", "does not exist"),
        "empty": (tmp_path / "empty", "empty", "no episode bags"),
        "wrong topics": (wrong, "joy_only", "missing topics ['observation'"),
        "wrong type": (typed, "string_obs", "has type std_msgs/msg/String, expected "
                                            "sensor_msgs/msg/JointState"),
    }
    for name, (path, names_file, words) in cases.items():
        assert train.main(["--bags", str(path), *FAST]) == 2, name
        err = capsys.readouterr().err
        assert names_file in err and words in err, (name, err)

    # through the real command line: a corrupt bag stops it, --skip-bad skips it with a warning
    mixed = tmp_path / "mixed" / "iter1"
    write_external_bag(mixed / "ep0", episodes[30])
    bad = _corrupt_bag(mixed / "ep1")
    r = cli("train", "--bags", mixed, *FAST)
    assert r.returncode == 2 and f"error: {bad}: " in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert train.main(["--bags", str(mixed), "--skip-bad", *FAST]) == 0
    err = capsys.readouterr().err
    assert f"WARNING: skipped {bad}" in err and "data: 1 episodes, 30 ticks" in err

    # a bag cut short by a crash (no metadata.yaml): always skipped with a warning naming it
    cut = tmp_path / "cut" / "iter1"
    write_external_bag(cut / "ep0", episodes[30])
    write_external_bag(cut / "ep1", episodes[20], storage="mcap")
    (cut / "ep1" / "metadata.yaml").unlink()
    assert train.main(["--bags", str(cut), *FAST]) == 0
    err = capsys.readouterr().err
    assert f"WARNING: skipped {cut / 'ep1'}: incomplete" in err
    assert "data: 1 episodes, 30 ticks" in err


def test_argument_errors_and_no_policy_server(tmp_path, episodes, capsys):
    assert train.main(["--bags", str(tmp_path), "--wait-ack", "-1"]) == 2
    assert "--wait-ack" in capsys.readouterr().err
    assert train.main(["--bags", str(tmp_path), "--threads", "-1"]) == 2
    assert "--threads must be >= 0" in capsys.readouterr().err
    assert train.main(["--bags", str(tmp_path), "--init", str(tmp_path / "none_here"),
                       "--no-deliver"]) == 2
    # --init names a missing checkpoint: checked after the data is read
    write_external_bag(tmp_path / "iter1" / "ep0", episodes[20])
    assert train.main(["--bags", str(tmp_path / "iter1"), "--init", str(tmp_path / "x"),
                       *FAST]) == 2
    assert "--init" in capsys.readouterr().err

    # delivery with nobody listening: checkpoint saved, status 4 and a clear warning
    out = tmp_path / "ckpt"
    status = train.main(["--bags", str(tmp_path / "iter1"), "--out", str(out), "--epochs-scale",
                         "0.05", "--no-progress", "--robot-name", "nobody_here",
                         "--wait-ack", "1.5"])
    err = capsys.readouterr().err
    assert status == train.EXIT_NO_ANSWER, err
    assert "no policy server answered on /nobody_here/policy/active within 1.5 s" in err
    assert (out / "latest").is_file()


def test_a_shared_domain_bag_is_trained_on_the_robot_named_by_robot_name(tmp_path, episodes):
    """A `ros2 bag record -a` of two robots on one domain: --robot-name picks the robot."""
    from mile_ros import bags

    bag = write_external_bag(tmp_path / "lab" / "iter1" / "rosbag2_0", episodes[20],
                             namespace="r1", others={"r2": episodes[30]})
    r = cli("train", "--bags", bag.parent, "--out", tmp_path / "ck", *FAST)
    assert r.returncode == 2 and "--robot-name" in r.stderr and "/r2/" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    (got,), _ = bags.load_episodes(bag.parent, robot="r2")
    np.testing.assert_allclose(got.state, episodes[30]["state"])
    r = cli("train", "--bags", bag.parent, "--out", tmp_path / "ck", "--robot-name", "r2", *FAST)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "data: 1 episodes, 30 ticks" in r.stderr
    (got,), _ = bags.load_episodes(bag.parent, robot="r1")
    assert len(got) == 20


def test_several_robot_names_read_each_named_robots_episodes_of_a_shared_bag(tmp_path, episodes):
    """`--robot-name r1 r2`: a shared-domain bag gives both robots' episodes, another bag once."""
    from mile_ros import bags

    shared = write_external_bag(tmp_path / "lab" / "iter1" / "rosbag2_0", episodes[20],
                                namespace="r1", others={"r2": episodes[30]})
    write_external_bag(tmp_path / "lab" / "iter1" / "rosbag2_1", episodes[40], namespace="r3")
    got, report = bags.load_episodes(shared.parent, robot=["r1", "r2", "r3"])
    assert sorted(len(e) for e in got) == [20, 30, 40] and report["episodes"] == 3
    by_robot = {e.metadata.get("robot_name"): len(e) for e in got if e.path == shared}
    assert by_robot == {"r1": 20, "r2": 30}, by_robot
    np.testing.assert_allclose(next(e for e in got if len(e) == 30).state,
                               episodes[30]["state"])
    (got,), _ = bags.load_episodes(shared, robot=["r2", "nobody"])       # the one it holds
    assert len(got) == 30
    with pytest.raises(bags.SharedBagError, match="--robot-name"):
        bags.load_episodes(shared, robot=["r5", "r6"])                     # none of them
    r = cli("train", "--bags", shared.parent, "--out", tmp_path / "ck", "--robot-name", "r1",
            "r2", "r3", *FAST)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "data: 3 episodes, 90 ticks" in r.stderr, r.stderr[-3000:]
    r = cli("train", "--bags", shared.parent, "--robot-name", "r1", "9r", *FAST)
    assert r.returncode == 2 and "--robot-name '9r' is not a valid ROS namespace" in r.stderr


def test_malformed_ros_args_are_a_configuration_error_before_training(tmp_path, episodes):
    """Bad --ros-args for the delivery stop `train` before it trains, in the nodes' wording."""
    bags = tmp_path / "lab" / "iter1"
    write_external_bag(bags / "ep0", episodes[20])
    r = cli("train", "--bags", bags, "--epochs-scale", "0.05", "--no-progress",
            "--ros-args", "-p", "no_value_given")
    assert r.returncode == 2, r.stderr
    assert "train: configuration error: bad --ros-args" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "data:" not in r.stderr   # nothing was loaded
    assert not (bags / "checkpoints").exists() and not (tmp_path / "lab" / "checkpoints").exists()
