"""Image policies: the encoders, old checkpoints, determinism, and the training device."""
import hashlib
import json

import numpy as np
import pytest
import torch

from mile_ros.learning import ActionSpec, MileConfig, ObsSpec, train_bc, train_mile
from mile_ros.learning.checkpoint import (
    CheckpointError,
    _canonical,
    load_checkpoint,
    save_checkpoint,
)
from mile_ros.learning.loop import _fused, resolve_device
from mile_ros.learning.model import MileModel
from mile_ros.learning.networks import GaussianPolicy, ImageEncoder, image_input
from mile_ros.learning.specs import Normalizer

torch.set_num_threads(1)
OBS = ObsSpec(["ee_x", "ee_y", "ee_z"], 1, image_shape=(32, 32, 3))
ACT = ActionSpec(["dx", "dy", "dz", "gripper"])
TINY = {"hidden": (16,), "min_updates": 4, "max_updates": 4, "pretrain_updates": 2,
        "batch_size": 16}

# the first encoder's parameters, as checkpoints written before `image_encoder` hold them
CONV3_KEYS = {"trunk.encoder.conv.0.weight": (32, 3, 5, 5), "trunk.encoder.conv.0.bias": (32,),
              "trunk.encoder.conv.2.weight": (64, 32, 3, 3), "trunk.encoder.conv.2.bias": (64,),
              "trunk.encoder.conv.4.weight": (64, 64, 3, 3), "trunk.encoder.conv.4.bias": (64,),
              "trunk.encoder.conv.8.weight": (64, 1024), "trunk.encoder.conv.8.bias": (64,),
              "trunk.mlp.0.weight": (16, 67), "trunk.mlp.0.bias": (16,),
              "head.weight": (8, 16), "head.bias": (8,)}


def episodes(n=2, t=30, size=32, seed=0):
    r = np.random.default_rng(seed)
    eps = [{"state": r.normal(size=(t, 3)), "a_r": r.uniform(-1, 1, (t, 4)),
            "a_h": np.full((t, 4), np.nan), "nu": np.zeros(t, bool),
            "image": r.integers(0, 255, (t, size, size, 3), dtype=np.uint8)} for _ in range(n)]
    eps[0]["nu"][:5] = True
    eps[0]["a_h"][:5] = 0.5
    return eps


def frames(b, h, w, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 255, (b, h, w, 3),
                                                                 dtype=np.uint8))


def conv_macs(encoder, h, w) -> int:
    """Multiply-accumulates of the encoder's convolutions and linear layer for one frame."""
    total = []

    def hook(mod, inp, out):
        if isinstance(mod, torch.nn.Conv2d):
            total.append(out[0].numel() * mod.in_channels * mod.kernel_size[0]
                         * mod.kernel_size[1])
        elif isinstance(mod, torch.nn.Linear):
            total.append(mod.in_features * mod.out_features)
    handles = [m.register_forward_hook(hook) for m in encoder.modules()]
    encoder(frames(1, h, w))
    for hd in handles:
        hd.remove()
    return sum(total)


@pytest.mark.parametrize("kind", ["patch", "conv3"])
@pytest.mark.parametrize("shape", [(32, 32), (48, 64), (64, 64), (96, 96), (128, 128)])
def test_encoder_output_shape_and_float_input(kind, shape):
    h, w = shape
    enc = ImageEncoder((h, w, 3), kind=kind)
    x = frames(5, h, w)
    y = enc(x)
    assert y.shape == (5, 64) and torch.isfinite(y).all()
    # the float input the trainer converts once per minibatch gives the same features
    torch.testing.assert_close(enc(image_input(x)), y, rtol=0, atol=0)
    with pytest.raises(ValueError, match="image must have shape"):
        enc(frames(5, h, w + 4))
    with pytest.raises(ValueError, match="float image"):
        enc(image_input(x)[:, :, :-1])


@pytest.mark.parametrize("kind", ["patch", "conv3"])
def test_fast_training_path_computes_what_the_plain_one_did(kind):
    """In-place ReLUs and scaling, fused Adam: the same features, gradients and steps."""
    torch.manual_seed(0)
    net = GaussianPolicy(3, 4, (16,), image_shape=(32, 32, 3), image_encoder=kind)
    plain = GaussianPolicy(3, 4, (16,), image_shape=(32, 32, 3), image_encoder=kind)
    plain.load_state_dict(net.state_dict())
    for m in plain.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    x = frames(8, 32, 32)
    torch.testing.assert_close(image_input(x), x.permute(0, 3, 1, 2).float() / 255.0 - 0.5,
                               rtol=0, atol=0)
    obs = {"state": torch.randn(8, 3), "image": image_input(x)}
    opts = [torch.optim.Adam(net.parameters(), **_fused(list(net.parameters()))),
            torch.optim.Adam(plain.parameters())]
    assert opts[0].defaults["fused"]
    for step in range(5):
        for model, opt in zip((net, plain), opts):
            opt.zero_grad()
            mu, log_std = model(obs)
            (mu.square().sum() + log_std.sum()).backward()
            opt.step()
        if step == 0:
            for a, b in zip(net.parameters(), plain.parameters()):
                torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
    for a, b in zip(net.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_patch_encoder_is_much_lighter_than_conv3():
    for size in (64, 96):
        new = conv_macs(ImageEncoder((size, size, 3), kind="patch"), size, size)
        old = conv_macs(ImageEncoder((size, size, 3), kind="conv3"), size, size)
        assert new * 4 < old, (size, new, old)
    with pytest.raises(ValueError, match="image_encoder must be one of"):
        ImageEncoder((64, 64, 3), kind="resnet")
    with pytest.raises(ValueError, match="image_encoder"):
        MileConfig(image_encoder="resnet").validate()


def test_new_training_uses_patch_and_records_it(tmp_path):
    model, _ = train_mile(episodes(), OBS, ACT, MileConfig(**TINY), progress=False)
    for net in (model.policy, model.mental):
        assert net.trunk.encoder.kind == "patch"
        assert net.init_kwargs["image_encoder"] == "patch"
    save_checkpoint(model, tmp_path / "ck")
    manifest = json.loads((tmp_path / "ck" / "manifest.json").read_text())
    assert manifest["networks"]["policy"]["kwargs"]["image_encoder"] == "patch"
    loaded = load_checkpoint(tmp_path / "ck")
    assert loaded.policy.trunk.encoder.kind == "patch"
    x = {"state": episodes()[0]["state"][:7], "image": episodes()[0]["image"][:7]}
    np.testing.assert_array_equal(loaded.act(x), model.act(x))
    # the old encoder stays available for new training
    old, _ = train_mile(episodes(), OBS, ACT, MileConfig(image_encoder="conv3", **TINY),
                        progress=False)
    assert old.policy.trunk.encoder.kind == "conv3"
    # state networks record no encoder (their manifests are as before)
    state = GaussianPolicy(3, 4, (16,))
    assert "image_encoder" not in state.init_kwargs


def _as_old_manifest(ckpt):
    """Rewrite a checkpoint's manifest as written before `image_encoder` existed."""
    path = ckpt / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.pop("manifest_sha256")
    for net in manifest["networks"].values():
        net["kwargs"].pop("image_encoder")
    manifest["config"].pop("image_encoder")
    manifest["manifest_sha256"] = hashlib.sha256(_canonical(manifest)).hexdigest()
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True))


def _image_model(encoder):
    torch.manual_seed(0)
    nets = [GaussianPolicy(3, 4, (16,), (32, 32, 3), image_encoder=encoder) for _ in range(2)]
    return MileModel(nets[0], nets[1], OBS, ACT, Normalizer(np.zeros(3), np.ones(3)), 0.3,
                     config=MileConfig(hidden=(16,), image_encoder=encoder))


def test_old_format_checkpoint_loads_and_runs_with_the_old_encoder(tmp_path):
    model = _image_model("conv3")
    assert {k: tuple(v.shape) for k, v in model.policy.state_dict().items()} == CONV3_KEYS
    save_checkpoint(model, tmp_path / "old")
    _as_old_manifest(tmp_path / "old")
    loaded = load_checkpoint(tmp_path / "old", expect_obs_spec=OBS, expect_action_spec=ACT)
    assert loaded.policy.trunk.encoder.kind == "conv3"
    assert loaded.mental.trunk.encoder.kind == "conv3"
    assert loaded.config.image_encoder == "conv3"
    ep = episodes()[0]
    x = {"state": ep["state"][:9], "image": ep["image"][:9]}
    np.testing.assert_array_equal(loaded.act(x), model.act(x))
    np.testing.assert_array_equal(loaded.intervention_probability(x),
                                  model.intervention_probability(x))
    runner = loaded.runner()
    assert runner.step(ep["state"][0], image=ep["image"][0]).shape == (4,)
    # and it warm-starts training, keeping its encoder
    warm, metrics = train_mile(episodes(), OBS, ACT, MileConfig(**TINY), init=loaded,
                               progress=False)
    assert metrics["warm_start"].startswith("init")
    assert warm.policy.trunk.encoder.kind == "conv3"

    # an old-format manifest means conv3: patch weights under it do not load
    save_checkpoint(_image_model("patch"), tmp_path / "mixed")
    _as_old_manifest(tmp_path / "mixed")
    with pytest.raises(CheckpointError, match="weights do not load"):
        load_checkpoint(tmp_path / "mixed")


@pytest.mark.parametrize("encoder", ["patch", "conv3"])
def test_same_seed_same_weights(encoder):
    cfg = dict(TINY, image_encoder=encoder)

    def weights(seed):
        m, _ = train_mile(episodes(), OBS, ACT, MileConfig(seed=seed, **cfg), progress=False)
        return [p.detach().clone() for net in (m.policy, m.mental) for p in net.parameters()]
    a, b, c = weights(3), weights(3), weights(4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_device_choice(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device(name)
    with pytest.raises(ValueError, match="'cpu', 'cuda', 'cuda:N' or 'auto'"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="'cpu', 'cuda', 'cuda:N' or 'auto'"):
        resolve_device("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_training_on_cpu_by_name_returns_a_cpu_model(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model, metrics = train_mile(episodes(), OBS, ACT, MileConfig(**TINY), progress=False,
                                device="auto")
    assert metrics["device"] == "cpu"
    assert all(p.device.type == "cpu" for net in (model.policy, model.mental)
               for p in net.parameters())
    bc = train_bc(episodes(), OBS, ACT, MileConfig(**TINY), progress=False, device="auto")
    assert bc.metrics["device"] == "cpu"
    with pytest.raises(ValueError, match="CUDA is not available"):
        train_mile(episodes(), OBS, ACT, MileConfig(**TINY), progress=False, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_gives_a_cpu_checkpoint(tmp_path):
    model, metrics = train_mile(episodes(), OBS, ACT, MileConfig(**TINY), progress=False,
                                device="cuda")
    assert metrics["device"].startswith("cuda")
    assert all(p.device.type == "cpu" for p in model.policy.parameters())
    save_checkpoint(model, tmp_path / "ck")
    loaded = load_checkpoint(tmp_path / "ck")
    x = {"state": episodes()[0]["state"][:5], "image": episodes()[0]["image"][:5]}
    np.testing.assert_allclose(loaded.act(x), model.act(x))
