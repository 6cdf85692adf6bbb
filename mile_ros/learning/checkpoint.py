"""Checkpoints: a directory with `weights.pt` and `manifest.json`, written atomically.

manifest.json holds the observation/action specs (with dimension names), the normaliser, the
training config, c and beta, the networks' constructor arguments, the creation time, the size
and sha256 of every file, and `manifest_sha256` over the rest of the manifest, so truncated,
edited or mismatched checkpoints are refused with a `CheckpointError` naming the path.
Image networks record their `image_encoder`; one written before that field existed is rebuilt
with the encoder of that time ("conv3", `networks.build_network`). Weights load onto the CPU
whatever device trained them.

The directory is built under a temporary name in the same parent and renamed into place; a
`latest` pointer file (the checkpoint's directory name) is replaced atomically afterwards.
`checkpoint_to_bytes` / `checkpoint_from_bytes` carry a checkpoint as an in-memory tar (for
sending over ROS).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import torch

from mile_ros._io import atomic_write, to_json
from mile_ros._io import fsync_path as _fsync_dir
from mile_ros.learning.config import MileConfig
from mile_ros.learning.model import MileModel
from mile_ros.learning.networks import build_network
from mile_ros.learning.specs import ActionSpec, Normalizer, ObsSpec

FORMAT = "mile_ros.learning.checkpoint"
VERSION = 1
WEIGHTS, MANIFEST, LATEST = "weights.pt", "manifest.json", "latest"
MAX_BYTES = 1 << 30

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "verify_checkpoint",
           "checkpoint_to_bytes", "checkpoint_from_bytes", "update_latest", "resolve_checkpoint"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the path and the problem."""

    def __init__(self, path, problem: str):
        super().__init__(f"checkpoint {path}: {problem}")
        self.path, self.problem = str(path), problem


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _canonical(d: dict) -> bytes:
    return json.dumps(d, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(model: MileModel, directory, extra_manifest: dict | None = None) -> str:
    """Write `model` to the new directory `directory` atomically -> checkpoint id."""
    final = Path(directory)
    if final.exists():
        raise CheckpointError(final, "already exists (checkpoints are never overwritten)")
    if not isinstance(model, MileModel):
        raise ValueError(f"model must be a MileModel, got {type(model).__name__}")
    if extra_manifest is not None and not isinstance(extra_manifest, dict):
        raise ValueError("extra_manifest must be a dict or None")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        buf = io.BytesIO()
        torch.save({"policy": model.policy.state_dict(), "mental": model.mental.state_dict()}, buf)
        weights = buf.getvalue()
        _write_file(tmp / WEIGHTS, weights)
        weights_sha = hashlib.sha256(weights).hexdigest()
        created = datetime.now(timezone.utc)
        manifest = {
            "format": FORMAT, "version": VERSION,
            "id": f"{created.strftime('%Y%m%dT%H%M%S')}-{weights_sha[:12]}",
            "created_utc": created.isoformat(timespec="milliseconds"),
            "created_unix": time.time(),
            "obs_spec": model.obs_spec.to_dict(),
            "action_spec": model.action_spec.to_dict(),
            "normalizer": model.normalizer.to_dict(),
            "config": model.config.to_dict(),
            "c": model.c, "beta": model.beta,
            "networks": {name: {"class": type(net).__name__, "kwargs": net.init_kwargs}
                         for name, net in (("policy", model.policy), ("mental", model.mental))},
            "files": {WEIGHTS: {"bytes": len(weights), "sha256": weights_sha}},
            "metrics": to_json(getattr(model, "metrics", {}) or {}),
            "extra": to_json(extra_manifest or {}),
        }
        manifest["manifest_sha256"] = hashlib.sha256(_canonical(manifest)).hexdigest()
        _write_file(tmp / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True,
                                               allow_nan=False).encode())
        _fsync_dir(tmp)
        os.rename(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest["id"]


def update_latest(root, checkpoint_dir) -> Path:
    """Point `root/latest` at `checkpoint_dir` (a child of root), replacing it atomically."""
    root, checkpoint_dir = Path(root), Path(checkpoint_dir)
    if checkpoint_dir.resolve().parent != root.resolve():
        raise CheckpointError(checkpoint_dir, f"is not directly inside {root}")
    verify_checkpoint(checkpoint_dir)
    return atomic_write(root / LATEST, checkpoint_dir.name + "\n", durable=True)


def resolve_checkpoint(path) -> Path:
    """Map a checkpoint directory, or a root holding a `latest` pointer, to the checkpoint dir."""
    path = Path(path)
    if path.is_dir() and not (path / MANIFEST).exists() and (path / LATEST).is_file():
        name = (path / LATEST).read_text().strip()
        if not name or "/" in name or name in (".", ".."):
            raise CheckpointError(path / LATEST, f"bad pointer {name!r}")
        return path / name
    return path


def verify_checkpoint(path) -> dict:
    """Check files, sizes and hashes -> the manifest dict (raises CheckpointError)."""
    path = resolve_checkpoint(path)
    if not path.is_dir():
        raise CheckpointError(path, "no such checkpoint directory")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise CheckpointError(path, f"missing {MANIFEST}")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(path, f"{MANIFEST} is unreadable or truncated ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(path, f"{MANIFEST} is not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise CheckpointError(path, f"unsupported checkpoint version {manifest.get('version')!r}")
    claimed = manifest.pop("manifest_sha256", None)
    try:
        actual = hashlib.sha256(_canonical(manifest)).hexdigest()
    except (TypeError, ValueError):
        actual = None
    if claimed != actual:
        raise CheckpointError(path, f"{MANIFEST} was edited (manifest hash mismatch)")
    manifest["manifest_sha256"] = claimed
    if not isinstance(manifest.get("id"), str) or not manifest["id"]:
        raise CheckpointError(path, f"{MANIFEST} has no checkpoint id")
    files = manifest.get("files")
    if not isinstance(files, dict) or WEIGHTS not in files:
        raise CheckpointError(path, f"{MANIFEST} lists no {WEIGHTS}")
    for name, info in files.items():
        if not isinstance(info, dict):
            raise CheckpointError(path, f"{MANIFEST} gives no size and hash for {name}")
        f = path / name
        if not f.is_file():
            raise CheckpointError(path, f"missing {name}")
        size = f.stat().st_size
        if size != info.get("bytes"):
            raise CheckpointError(path, f"{name} is truncated or padded "
                                        f"({size} bytes, manifest says {info.get('bytes')})")
        if _sha256_file(f) != info.get("sha256"):
            raise CheckpointError(path, f"{name} content hash mismatch (corrupt or edited)")
    return manifest


def load_checkpoint(path, expect_obs_spec: ObsSpec | None = None,
                    expect_action_spec: ActionSpec | None = None) -> MileModel:
    """Validate and load a checkpoint (directory, or root with `latest`) -> MileModel."""
    path = resolve_checkpoint(path)
    manifest = verify_checkpoint(path)
    try:
        obs_spec = ObsSpec.from_dict(manifest["obs_spec"])
        action_spec = ActionSpec.from_dict(manifest["action_spec"])
        normalizer = Normalizer.from_dict(manifest["normalizer"])
        config = MileConfig.from_dict(manifest.get("config", {}))
        nets = {k: build_network(v["class"], v["kwargs"]) for k, v in manifest["networks"].items()}
        encoder = getattr(nets["policy"].trunk.encoder, "kind", None)
        if encoder is not None:   # older manifests: the encoder the networks were built with
            config.image_encoder = encoder
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(path, f"manifest is inconsistent ({e})") from None
    if expect_obs_spec is not None and obs_spec != expect_obs_spec:
        raise CheckpointError(path, f"observation spec mismatch: checkpoint has {obs_spec}, "
                                    f"expected {expect_obs_spec}")
    if expect_action_spec is not None and action_spec != expect_action_spec:
        raise CheckpointError(path, f"action spec mismatch: checkpoint has {action_spec}, "
                                    f"expected {expect_action_spec}")
    if normalizer.mean.shape[0] != obs_spec.state_dim:
        raise CheckpointError(path, "normalizer size does not match the observation spec")
    try:
        state = torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)
        nets["policy"].load_state_dict(state["policy"])
        nets["mental"].load_state_dict(state["mental"])
    except Exception as e:  # noqa: BLE001 - any unpickling/shape problem is a bad checkpoint
        raise CheckpointError(path, f"weights do not load ({type(e).__name__}: {e})") from None
    try:
        model = MileModel(nets["policy"], nets["mental"], obs_spec, action_spec, normalizer,
                          manifest.get("c"), manifest.get("beta", 1.0), config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(path, f"manifest has bad c/beta ({e})") from None
    model.metrics = manifest.get("metrics", {})
    model.checkpoint_id = manifest["id"]
    model.manifest = manifest
    return model


def checkpoint_to_bytes(path) -> bytes:
    """Return the (validated) checkpoint directory as an uncompressed tar in memory."""
    path = resolve_checkpoint(path)
    manifest = verify_checkpoint(path)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in [MANIFEST] + sorted(manifest["files"]):
            tar.add(path / name, arcname=f"{path.name}/{name}", recursive=False)
    return buf.getvalue()


def checkpoint_from_bytes(data: bytes, dest_root) -> Path:
    """Unpack bytes from `checkpoint_to_bytes` into dest_root (atomically), validate -> path.

    If the same checkpoint is already there it is reused.
    """
    dest_root = Path(dest_root)
    where = f"<{len(data)} bytes for {dest_root}>"
    if len(data) > MAX_BYTES:
        raise CheckpointError(where, "too large")
    try:
        tar = tarfile.open(fileobj=io.BytesIO(bytes(data)), mode="r:")
        members = tar.getmembers()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise CheckpointError(where, f"not a checkpoint archive ({e})") from None
    tops = {m.name.split("/")[0] for m in members}
    if len(tops) != 1 or not members:
        raise CheckpointError(where, "archive must hold exactly one checkpoint directory")
    name = tops.pop()
    for m in members:
        parts = m.name.split("/")
        if not m.isfile() or len(parts) != 2 or parts[1] in ("", ".", "..") or name in (".", ".."):
            raise CheckpointError(where, f"unexpected archive member {m.name!r}")
    dest_root.mkdir(parents=True, exist_ok=True)
    tmp = dest_root / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for m in members:
            src = tar.extractfile(m)
            _write_file(tmp / m.name.split("/")[1], src.read())
        manifest = verify_checkpoint(tmp)
        final = dest_root / name
        if final.exists():
            if verify_checkpoint(final).get("manifest_sha256") == manifest["manifest_sha256"]:
                shutil.rmtree(tmp)
                return final
            raise CheckpointError(final, "exists with different content")
        os.rename(tmp, final)
        _fsync_dir(dest_root)
        return final
    except CheckpointError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.path == str(tmp):
            raise CheckpointError(f"{where} ({name})", e.problem) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
