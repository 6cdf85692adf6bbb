"""Small policies for the benchmark (initial policies, mental models, baselines).

With the same reading interface as mile_ros.learning.model.MileModel: .act(),
.action_distribution().

A BenchPolicy is an MLP on normalised stacked observations: Gaussian (mean bounded to [-1,1] by
tanh; one learned log-std per action dimension, shared by all states, clamped to [-5, 1]) or
categorical (logits). A state-independent sigma keeps a Gaussian policy from explaining a tick
away by inflating its variance there instead of moving its mean. `fit_weighted` trains it by
weighted maximum likelihood -- the building block of BC and of the weighted-BC baselines.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

LOG_STD_MIN, LOG_STD_MAX = -5.0, 1.0
# observation normaliser: dimensions that barely vary in the data are not blown up
STD_FLOOR = 0.05


class BenchPolicy(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, kind: str, hidden=(256, 256)):
        super().__init__()
        if kind not in ("continuous", "discrete"):
            raise ValueError(f"policy kind must be 'continuous' or 'discrete', got {kind!r}")
        self.obs_dim, self.act_dim, self.kind, self.hidden = (int(obs_dim), int(act_dim), kind,
                                                              tuple(hidden))
        layers, d = [], self.obs_dim
        for h in self.hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, act_dim)
        if kind == "continuous":
            self.log_std = nn.Parameter(torch.full((act_dim,), -1.0))
        self.register_buffer("obs_mean", torch.zeros(self.obs_dim))
        self.register_buffer("obs_std", torch.ones(self.obs_dim))

    def set_normalizer(self, obs: np.ndarray) -> None:
        o = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
        self.obs_mean.copy_(o.mean(0))
        self.obs_std.copy_(o.std(0).clamp_min(STD_FLOOR) if len(o) > 1
                           else torch.ones(self.obs_dim))

    def forward(self, obs: torch.Tensor):
        out = self.head(self.body((obs - self.obs_mean) / self.obs_std))
        if self.kind == "discrete":
            return out
        return torch.tanh(out), self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).expand_as(out)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        if self.kind == "discrete":
            return torch.log_softmax(self(obs), -1).gather(
                -1, actions.long().view(-1, 1)).squeeze(-1)
        mu, log_std = self(obs)
        z = (actions - mu) / log_std.exp()
        return (-0.5 * z ** 2 - log_std - 0.5 * np.log(2 * np.pi)).sum(-1)

    # --- MileModel-like reading interface (numpy in, numpy out) ---
    @torch.no_grad()
    def action_distribution(self, obs):
        o = torch.as_tensor(np.atleast_2d(np.asarray(obs, dtype=np.float32)))
        out = self(o)
        return out.numpy() if self.kind == "discrete" else (out[0].numpy(), out[1].numpy())

    @torch.no_grad()
    def act(self, obs, deterministic: bool = True, rng: np.random.Generator | None = None):
        single = np.asarray(obs).ndim == 1
        d = self.action_distribution(obs)
        if self.kind == "discrete":
            if deterministic:
                a = d.argmax(-1)
            else:
                p = np.exp(d - d.max(-1, keepdims=True))
                p /= p.sum(-1, keepdims=True)
                u = (rng or np.random.default_rng()).random((len(p), 1))
                a = (p.cumsum(-1) < u).sum(-1)
        else:
            mu, log_std = d
            a = mu if deterministic else np.clip(
                mu + np.exp(log_std) * (rng or np.random.default_rng()).standard_normal(mu.shape),
                -1, 1)
        return a[0] if single else a

    def save(self, path) -> None:
        torch.save({"obs_dim": self.obs_dim, "act_dim": self.act_dim, "kind": self.kind,
                    "hidden": list(self.hidden), "state_dict": self.state_dict()}, path)

    @classmethod
    def load(cls, path) -> "BenchPolicy":
        d = torch.load(path, weights_only=True)
        pol = cls(d["obs_dim"], d["act_dim"], d["kind"], tuple(d["hidden"]))
        pol.load_state_dict(d["state_dict"])
        return pol

    def clone(self) -> "BenchPolicy":
        return copy.deepcopy(self)


def fit_weighted(policy: BenchPolicy, obs, actions, weights=None, steps: int = 1000,
                 batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
                 weight_decay: float = 0.0) -> dict:
    """Weighted maximum likelihood: minimise -sum_i w_i log pi(a_i|s_i) / sum_i w_i.

    Minimised by Adam over `steps` minibatches drawn with probability proportional to w (an
    unbiased, low-variance form of the weighted loss). Samples with w=0 are never drawn.
    """
    obs = torch.as_tensor(np.asarray(obs, dtype=np.float32))
    act = torch.as_tensor(np.asarray(actions, dtype=np.int64 if policy.kind == "discrete"
                                     else np.float32))
    w = np.ones(len(obs)) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(obs) == 0 or w.sum() <= 0:
        return {"steps": 0, "loss": float("nan")}
    g = torch.Generator().manual_seed(int(seed))
    probs = torch.as_tensor(w / w.sum(), dtype=torch.float64)
    opt = torch.optim.Adam(policy.parameters(), lr=lr, weight_decay=weight_decay)
    loss = torch.tensor(float("nan"))
    for _ in range(int(steps)):
        idx = torch.multinomial(probs, min(batch_size, max(len(obs), 32)), replacement=True,
                                generator=g)
        loss = -policy.log_prob(obs[idx], act[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {"steps": int(steps), "loss": float(loss.detach())}


def bc_steps(n_samples: int, epochs: float = 30.0, batch_size: int = 256, lo: int = 300,
             hi: int = 3000) -> int:
    """Gradient steps for a data set of n samples: ~`epochs` passes, clipped to [lo, hi]."""
    return int(np.clip(epochs * n_samples / batch_size, lo, hi))
