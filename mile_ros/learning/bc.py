"""Behaviour cloning (weighted, on a_r, a_h or the executed action) over the generic loop."""
from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn

from mile_ros.learning import mile
from mile_ros.learning.config import MileConfig
from mile_ros.learning.loop import (
    _check_compatible,
    _finite_actions,
    _make_network,
    _select_and_fit,
    _Tensors,
    prepare_episodes,
    resolve_device,
    seed_everything,
)
from mile_ros.learning.model import MileModel
from mile_ros.learning.specs import ActionSpec, Normalizer, ObsSpec


def _bc_loss(net, tensors, target, action_spec, weight, nll_beta: float = 0.0):
    def loss_fn(idx, presampled=False):
        idx = tensors.index(idx)
        obs = tensors.obs_at(idx)
        y = target[idx]
        w = torch.ones(len(idx), device=idx.device) if presampled else weight[idx]
        if action_spec.continuous:
            mu, ls = net(obs)
            nll = mile.gaussian_nll(mu, ls, y, nll_beta)
        else:
            nll = nn.functional.cross_entropy(net(obs), y, reduction="none")
        loss = (w * nll).sum() / w.sum().clamp(min=1e-8)
        return loss, {"loss": float(loss.detach())}
    return loss_fn


def _bc_targets(data, target, action_spec):
    if target not in ("a_r", "a_h", "executed"):
        raise ValueError(f"target must be 'a_r', 'a_h' or 'executed', got {target!r}")
    nu = data["nu"]
    if target == "executed":
        mask = nu[:, None] if action_spec.continuous else nu
        y = np.where(mask, data["a_h"], data["a_r"])
    else:
        y = data[target]
    valid = (_finite_actions(y, action_spec) & (nu if target == "a_h" else True)
             & (data["weight"] > 0))
    if not valid.any():
        raise ValueError(f"no ticks with a valid {target} action and a weight > 0 to clone")
    return y, valid


def train_bc(episodes, obs_spec: ObsSpec, action_spec: ActionSpec,
             config: MileConfig | None = None, *, target: str = "a_r",
             init: MileModel | None = None, progress: bool = True,
             sampling: str = "uniform", device="cpu") -> MileModel:
    """Fit the policy to `target` actions by behaviour cloning.

    `target`: "a_r" robot, "a_h" interventions only, "executed" = a_h where nu else a_r; the fit
    is weighted by an optional per-tick "weight" (`sampling="uniform"`: uniform minibatches, each
    tick's loss times its weight; "weight": minibatches drawn in proportion to the weight). Ticks
    of weight 0 are left out, as if absent. Accepts a list of episode dicts or one dict.
    The mental model of the result is a copy of the policy; c is None unless config.c is set.
    Metrics in `model.metrics`. `device` ("cpu", "cuda", "auto": `loop.resolve_device`) is where
    it trains; the model is returned on the CPU.
    """
    config = copy.deepcopy(config or MileConfig()).validate(action_spec)
    if sampling not in ("uniform", "weight"):
        raise ValueError(f"sampling must be 'uniform' or 'weight', got {sampling!r}")
    device = resolve_device(device)
    seed_everything(config.seed)
    t0 = time.perf_counter()
    data = prepare_episodes(episodes, obs_spec, action_spec)
    y, valid = _bc_targets(data, target, action_spec)
    data = {k: (v[valid] if isinstance(v, np.ndarray) else v) for k, v in data.items()}
    data["a_r"] = y[valid]
    if init is not None:
        _check_compatible(init, obs_spec, action_spec)
    normalizer = init.normalizer if init is not None else Normalizer.fit(data["raw"])
    net = (copy.deepcopy(init.policy) if init is not None
           else _make_network(obs_spec, action_spec, config)).to(device)
    tensors = _Tensors(data, normalizer, action_spec, device)
    gen = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    loss_fn = _bc_loss(net, tensors, tensors.a_r, action_spec, tensors.weight, config.nll_beta)
    metrics = _select_and_fit(loss_fn, [net], data, config, gen, rng, progress, f"BC ({target})",
                              sample_weight=data["weight"] if sampling == "weight" else None)
    metrics.update(time_s=time.perf_counter() - t0, target=target, device=str(device))
    net.cpu()
    model = MileModel(net, copy.deepcopy(net), obs_spec, action_spec, normalizer,
                      config.c, config.beta, config)
    model.metrics = metrics
    return model
