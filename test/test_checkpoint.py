"""Checkpoints: atomic directory + manifest, round trips, and refusal of bad checkpoints."""
import io
import json
import tarfile

import numpy as np
import pytest
import torch

from mile_ros.learning import ActionSpec, MileConfig, ObsSpec, train_mile
from mile_ros.learning.checkpoint import (
    CheckpointError,
    checkpoint_from_bytes,
    checkpoint_to_bytes,
    load_checkpoint,
    save_checkpoint,
    update_latest,
    verify_checkpoint,
)

torch.set_num_threads(1)
OBS = ObsSpec(["x", "y", "z"], frame_stack=2)
ACT = ActionSpec(["dx", "dy"])


@pytest.fixture(scope="module")
def model():
    r = np.random.default_rng(0)
    eps = []
    for _ in range(4):
        s = r.normal(size=(30, 3))
        nu = r.uniform(size=30) < 0.3
        eps.append({"state": s, "a_r": np.tanh(s[:, :2]), "nu": nu,
                    "a_h": np.where(nu[:, None], np.tanh(-s[:, :2]), np.nan)})
    m, _ = train_mile(eps, OBS, ACT, MileConfig(hidden=(16,), min_updates=20, max_updates=20,
                                                pretrain_updates=10), progress=False)
    return m


@pytest.fixture()
def x():
    return np.random.default_rng(1).normal(size=(25, OBS.stacked_dim))


def test_round_trip_gives_identical_outputs(model, tmp_path, x):
    cid = save_checkpoint(model, tmp_path / "iter1", {"iteration": 1})
    update_latest(tmp_path, tmp_path / "iter1")
    assert (tmp_path / "latest").read_text().strip() == "iter1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter1", "latest"]   # no temp left
    loaded = load_checkpoint(tmp_path, expect_obs_spec=OBS, expect_action_spec=ACT)  # via latest
    assert loaded.checkpoint_id == cid
    np.testing.assert_array_equal(model.act(x), loaded.act(x))
    np.testing.assert_array_equal(model.intervention_probability(x),
                                  loaded.intervention_probability(x))
    for a, b in zip(model.action_distribution(x), loaded.action_distribution(x)):
        np.testing.assert_array_equal(a, b)
    assert loaded.c == model.c and loaded.beta == model.beta
    np.testing.assert_array_equal(loaded.normalizer.mean, model.normalizer.mean)
    manifest = json.loads((tmp_path / "iter1" / "manifest.json").read_text())
    assert manifest["obs_spec"]["state_names"] == ["x", "y", "z"]
    assert manifest["action_spec"]["names"] == ["dx", "dy"]
    assert manifest["extra"] == {"iteration": 1} and manifest["created_utc"]
    assert len(manifest["files"]["weights.pt"]["sha256"]) == 64


def test_bytes_round_trip(model, tmp_path, x):
    save_checkpoint(model, tmp_path / "a" / "ck")
    data = checkpoint_to_bytes(tmp_path / "a" / "ck")
    dest = checkpoint_from_bytes(data, tmp_path / "b")
    assert dest == tmp_path / "b" / "ck"
    np.testing.assert_array_equal(load_checkpoint(dest).act(x), model.act(x))
    assert checkpoint_from_bytes(data, tmp_path / "b") == dest          # same content: reused
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["ck"]


def test_truncated_weights_refused(model, tmp_path):
    save_checkpoint(model, tmp_path / "ck")
    w = tmp_path / "ck" / "weights.pt"
    w.write_bytes(w.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"ck.*weights.pt is truncated"):
        load_checkpoint(tmp_path / "ck")


def test_same_size_corruption_refused(model, tmp_path):
    save_checkpoint(model, tmp_path / "ck")
    w = tmp_path / "ck" / "weights.pt"
    raw = bytearray(w.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    w.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="hash mismatch"):
        load_checkpoint(tmp_path / "ck")


def test_edited_manifest_refused(model, tmp_path):
    save_checkpoint(model, tmp_path / "ck")
    m = tmp_path / "ck" / "manifest.json"
    manifest = json.loads(m.read_text())
    manifest["c"] = 123.0
    m.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="edited"):
        load_checkpoint(tmp_path / "ck")
    m.write_text(m.read_text()[:50])                                        # truncated manifest
    with pytest.raises(CheckpointError, match="unreadable or truncated"):
        load_checkpoint(tmp_path / "ck")
    m.unlink()
    with pytest.raises(CheckpointError, match="missing manifest.json"):
        load_checkpoint(tmp_path / "ck")


def test_spec_mismatch_and_other_refusals(model, tmp_path):
    save_checkpoint(model, tmp_path / "ck")
    with pytest.raises(CheckpointError, match="observation spec mismatch"):
        load_checkpoint(tmp_path / "ck", expect_obs_spec=ObsSpec(["x", "y", "q"], 2))
    with pytest.raises(CheckpointError, match="action spec mismatch"):
        load_checkpoint(tmp_path / "ck", expect_action_spec=ActionSpec(["dx", "dz"]))
    with pytest.raises(CheckpointError, match="already exists"):
        save_checkpoint(model, tmp_path / "ck")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="not a checkpoint archive"):
        checkpoint_from_bytes(b"garbage" * 100, tmp_path / "in")
    buf = io.BytesIO()                                              # path traversal in the tar
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("ck/../../evil")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(CheckpointError, match="unexpected archive member"):
        checkpoint_from_bytes(buf.getvalue(), tmp_path / "in")
    data = bytearray(checkpoint_to_bytes(tmp_path / "ck"))          # corrupted in transit
    data[2000] ^= 0xFF
    with pytest.raises(CheckpointError):
        checkpoint_from_bytes(bytes(data), tmp_path / "in2")
    assert not any(p.name.startswith(".") for p in (tmp_path / "in2").iterdir())


def test_latest_only_points_at_valid_checkpoints(model, tmp_path):
    save_checkpoint(model, tmp_path / "good")
    update_latest(tmp_path, tmp_path / "good")
    save_checkpoint(model, tmp_path / "bad")
    (tmp_path / "bad" / "weights.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="bad"):
        update_latest(tmp_path, tmp_path / "bad")
    assert (tmp_path / "latest").read_text().strip() == "good"
    assert verify_checkpoint(tmp_path)["id"]
