"""Policy networks for MILE.

A Gaussian policy whose mean lies in the [-1, 1] action box, a categorical policy, and an
optional small CNN for camera images (uint8 HxWx3, 64-96 px).

Inputs are either a state tensor [B, S] (already normalised and frame-stacked) or a dict
{"state": [B, S], "image": uint8 [B, H, W, 3]}; the image features are concatenated with the
state before the MLP. Every network keeps the keyword arguments it was built with in
`.init_kwargs`, so a checkpoint can rebuild it.

Image encoders (`image_encoder`, kept in `.init_kwargs`):
  * "patch" (the default for new networks): a 4x4 stride-4 patch convolution, then two 3x3
    convolutions (stride 2, then 1), 32 channels each, flattened into a linear layer: 1.7 M
    multiply-adds a 64 px frame against 9.6 M for "conv3" (timings: bench/bench_image.py).
  * "conv3": the first encoder (5x5/3x3/3x3 stride-2 convolutions with 32-64-64 channels, 4x4
    average pool, linear). Checkpoints written before `image_encoder` existed are rebuilt with
    it (`build_network`), so they load and run unchanged.
The NHWC uint8 frame is read as a channels-last float tensor (no copy into NCHW). The ReLUs run
in place (no parameters: the state dict and the arithmetic are the same, one allocation fewer
per activation; bench/bench_image.py).
"""
from __future__ import annotations

import torch
from torch import nn

LOG_STD_BOUNDS = (-5.0, 2.0)
IMAGE_SIZE_RANGE = (32, 128)


IMAGE_ENCODERS = ("patch", "conv3")
DEFAULT_IMAGE_ENCODER = "patch"
LEGACY_IMAGE_ENCODER = "conv3"   # what a checkpoint without `image_encoder` was built with


def _conv_out(n: int, kernel: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - kernel) // stride + 1


def _patch_layers(h: int, w: int, out_dim: int) -> nn.Sequential:
    for k, s, p in ((4, 4, 0), (3, 2, 1), (3, 1, 1)):
        h, w = _conv_out(h, k, s, p), _conv_out(w, k, s, p)
    return nn.Sequential(
        nn.Conv2d(3, 32, 4, stride=4), nn.ReLU(inplace=True),
        nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(32, 32, 3, stride=1, padding=1), nn.ReLU(inplace=True),
        nn.Flatten(), nn.Linear(32 * h * w, out_dim), nn.ReLU(inplace=True))


def _conv3_layers(out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 32, 5, stride=2, padding=2), nn.ReLU(inplace=True),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64 * 16, out_dim),
        nn.ReLU(inplace=True))


class ImageEncoder(nn.Module):
    """uint8 [B, H, W, 3] -> features [B, out_dim]; `kind` "patch" or "conv3" (module doc)."""

    def __init__(self, image_shape: tuple[int, int, int], out_dim: int = 64,
                 kind: str = DEFAULT_IMAGE_ENCODER):
        super().__init__()
        h, w, ch = (int(v) for v in image_shape)
        if ch != 3 or not all(IMAGE_SIZE_RANGE[0] <= v <= IMAGE_SIZE_RANGE[1] for v in (h, w)):
            raise ValueError(f"image_shape must be (H, W, 3) with H, W in {IMAGE_SIZE_RANGE}, "
                             f"got {tuple(image_shape)}")
        if kind not in IMAGE_ENCODERS:
            raise ValueError(f"image_encoder must be one of {', '.join(IMAGE_ENCODERS)}, "
                             f"got {kind!r}")
        self.image_shape, self.kind = (h, w, ch), kind
        self.conv = _patch_layers(h, w, out_dim) if kind == "patch" else _conv3_layers(out_dim)
        self.out_dim = out_dim

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Encode uint8 frames [B, H, W, 3], or the float [B, 3, H, W] of `image_input`."""
        if image.dtype == torch.uint8:
            if image.dim() != 4 or tuple(image.shape[1:]) != self.image_shape:
                raise ValueError("image must have shape "
                                 f"[B, {', '.join(map(str, self.image_shape))}], "
                                 f"got {tuple(image.shape)}")
            image = image_input(image)
        elif image.dim() != 4 or tuple(image.shape[1:]) != (3,) + self.image_shape[:2]:
            raise ValueError("a float image must be image_input's [B, 3, "
                             f"{self.image_shape[0]}, {self.image_shape[1]}], "
                             f"got {tuple(image.shape)}")
        return self.conv(image)


def image_input(image: torch.Tensor) -> torch.Tensor:
    """Return uint8 frames [B, H, W, 3] as the encoders' float input [B, 3, H, W] in [-0.5, 0.5].

    The NHWC bytes are viewed as NCHW, a channels-last tensor, which the convolutions take as
    is. Converting a minibatch once lets the policy and the mental model share it. The scaling
    runs in place on the one new float tensor (the same arithmetic as `/ 255 - 0.5`, without
    two more frame-sized allocations).
    """
    return image.permute(0, 3, 1, 2).to(torch.float32, copy=True).div_(255.0).sub_(0.5)


def _encoder_kwargs(image_shape, image_encoder) -> dict:
    """`image_encoder` for `.init_kwargs`: only networks that take images record one."""
    return {} if image_shape is None else {"image_encoder": str(image_encoder)}


class _Trunk(nn.Module):
    def __init__(self, obs_dim: int, hidden, image_shape, image_encoder=DEFAULT_IMAGE_ENCODER):
        super().__init__()
        if int(obs_dim) < 1:
            raise ValueError(f"obs_dim must be >= 1, got {obs_dim}")
        hidden = tuple(int(h) for h in hidden)
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden must be a non-empty list of positive sizes, got {hidden}")
        self.obs_dim = int(obs_dim)
        self.encoder = (ImageEncoder(image_shape, kind=image_encoder)
                        if image_shape is not None else None)
        layers, width = [], self.obs_dim + (self.encoder.out_dim if self.encoder else 0)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        self.mlp = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, obs) -> torch.Tensor:
        if isinstance(obs, dict):
            state, image = obs.get("state"), obs.get("image")
        else:
            state, image = obs, None
        if state is None or state.dim() != 2 or state.shape[1] != self.obs_dim:
            raise ValueError(f"state must have shape [B, {self.obs_dim}], got "
                             f"{None if state is None else tuple(state.shape)}")
        if (image is None) != (self.encoder is None):
            raise ValueError("this network " + ("needs" if self.encoder else "takes no")
                             + " camera image input")
        x = state.to(torch.float32)
        if self.encoder is not None:
            x = torch.cat([x, self.encoder(image)], -1)
        return self.mlp(x)


class GaussianPolicy(nn.Module):
    """pi(a|s) = N(mu, diag exp(log_std)^2).

    With mu = tanh(.) in [-1, 1] and log_std squashed into `log_std_bounds`.
    forward(obs) -> (mu [B, A], log_std [B, A]).
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden=(256, 256), image_shape=None,
                 log_std_bounds=LOG_STD_BOUNDS, image_encoder=DEFAULT_IMAGE_ENCODER):
        super().__init__()
        if int(act_dim) < 1:
            raise ValueError(f"act_dim must be >= 1, got {act_dim}")
        lo, hi = (float(v) for v in log_std_bounds)
        if not lo < hi:
            raise ValueError("log_std_bounds must be (low, high) with low < high, "
                             f"got {log_std_bounds}")
        self.init_kwargs = {"obs_dim": int(obs_dim), "act_dim": int(act_dim),
                            "hidden": [int(h) for h in hidden],
                            "image_shape": (None if image_shape is None
                                            else [int(v) for v in image_shape]),
                            "log_std_bounds": [lo, hi], **_encoder_kwargs(image_shape,
                                                                          image_encoder)}
        self.trunk = _Trunk(obs_dim, hidden, image_shape, image_encoder)
        self.head = nn.Linear(self.trunk.out_dim, 2 * int(act_dim))
        self.act_dim, self.log_std_bounds = int(act_dim), (lo, hi)

    def forward(self, obs) -> tuple[torch.Tensor, torch.Tensor]:
        mean_raw, std_raw = self.head(self.trunk(obs)).chunk(2, -1)
        lo, hi = self.log_std_bounds
        return torch.tanh(mean_raw), lo + (hi - lo) * torch.sigmoid(std_raw)


class CategoricalPolicy(nn.Module):
    """pi(a|s) = softmax(logits). forward(obs) -> logits [B, n_actions]."""

    def __init__(self, obs_dim: int, n_actions: int, hidden=(256, 256), image_shape=None,
                 image_encoder=DEFAULT_IMAGE_ENCODER):
        super().__init__()
        if int(n_actions) < 2:
            raise ValueError(f"n_actions must be >= 2, got {n_actions}")
        self.init_kwargs = {"obs_dim": int(obs_dim), "n_actions": int(n_actions),
                            "hidden": [int(h) for h in hidden],
                            "image_shape": (None if image_shape is None
                                            else [int(v) for v in image_shape]),
                            **_encoder_kwargs(image_shape, image_encoder)}
        self.trunk = _Trunk(obs_dim, hidden, image_shape, image_encoder)
        self.head = nn.Linear(self.trunk.out_dim, int(n_actions))
        self.n_actions = int(n_actions)

    def forward(self, obs) -> torch.Tensor:
        return self.head(self.trunk(obs))


NETWORKS = {"GaussianPolicy": GaussianPolicy, "CategoricalPolicy": CategoricalPolicy}


def build_network(class_name: str, kwargs: dict) -> nn.Module:
    """Rebuild a network from its class name and `.init_kwargs` (used by checkpoints).

    An image network recorded without `image_encoder` (written before there was a choice) is
    rebuilt with the encoder it was trained with, "conv3".
    """
    if class_name not in NETWORKS:
        raise ValueError(f"unknown network class {class_name!r}")
    kwargs = dict(kwargs)
    if kwargs.get("image_shape") is not None:
        kwargs["image_shape"] = tuple(kwargs["image_shape"])
        kwargs.setdefault("image_encoder", LEGACY_IMAGE_ENCODER)
    return NETWORKS[class_name](**kwargs)
