"""MILE for the benchmark: the paper's loss (DESIGN §2) on the benchmark's BenchPolicy networks.

    J = lam * BCE(p(nu=1|s), nu) + (1 - lam) * NLL(pi(a_h|s)) over ticks with nu=1

with p(nu=1|s) in closed form (Gaussian: chi-square expectation on a fixed quantile grid;
discrete: a sum over actions). J's first term trains the policy pi and the mental model pihat,
the second only pi. Each iteration warm-starts pi and pihat from the previous iteration (the
first from the initial policy, which is also the person's presumed mental model); c is estimated
from the data's intervention rate unless given (the mean predicted p over the data equals it).

The mental model (`mental`): "joint" trains pihat by J1 only, as in the paper; on a few hundred
ticks pihat then simply follows pi to wherever the intervention labels pull it, the "no
intervention" ticks stop anchoring pi, and MILE degrades to BC on the interventions (measured:
0.0 success on Drawer-Open after 2 episodes, where "anchored" reaches 0.52). "anchored" (default)
adds -log pihat(a_r|s) over all ticks: the person's mental model predicts the robot they watch,
and a_r is recorded on every tick anyway. "frozen" keeps pihat at its warm start.

pi models the person's policy, so the person's demonstrations (the data of the initial policy,
which every baseline also re-uses) are samples of pi as much as the intervention actions are:
with `demos` they join the NLL term (J2), not the intervention term. Without them, one episode of
data re-fits pi on ~40 intervention ticks and MILE forgets the demonstrated behaviour.

When mile_ros.mile provides the closed forms, they are used (same formulas); the local ones
below keep the benchmark running on its own and cross-check the core in tests.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from scipy.stats import chi2

from .envs import stack_episode
from .policy import BenchPolicy, bc_steps


@dataclass
class MileBenchConfig:
    c: float | None = None        # None: estimated from the data's intervention rate
    beta: float = 1.0
    lam: float = 0.5
    epochs: float = 30.0
    max_steps: int = 2000
    batch_size: int = 256
    lr: float = 3e-4
    n_quantiles: int = 32
    frame_stack: int = 4
    mental: str = "anchored"      # anchored (default) | joint (paper: J1 alone trains pihat) | frozen
    anchor: float = 1.0           # mental="anchored": weight of -log pihat(a_r|s) over all ticks
    learn_c: bool = False         # c as a trained parameter, initialised by the estimate
    demos: bool = True            # the initial demonstrations join the NLL term (see below)

    @classmethod
    def from_overrides(cls, overrides: dict) -> "MileBenchConfig":
        names = {f.name for f in fields(cls)}
        bad = sorted(set(overrides) - names)
        if bad:
            raise ValueError(f"unknown MILE option(s) {', '.join(bad)}; valid: {', '.join(sorted(names))}")
        return cls(**overrides)


class MileBenchModel:
    """Policy + mental model + c, beta; reads like MileModel (.act, .action_distribution)."""

    def __init__(self, policy: BenchPolicy, mental: BenchPolicy, c: float, beta: float):
        self.policy, self.mental, self.c, self.beta = policy, mental, float(c), float(beta)

    def act(self, obs, deterministic: bool = True):
        return self.policy.act(obs, deterministic)

    def action_distribution(self, obs):
        return self.policy.action_distribution(obs)

    @torch.no_grad()
    def intervention_probability(self, obs) -> np.ndarray:
        o = torch.as_tensor(np.atleast_2d(np.asarray(obs, dtype=np.float32)))
        return intervention_probability(self.policy, self.mental, o, self.c, self.beta).numpy()


_GRID: dict = {}


def _chi2_grid(dof: int, n: int) -> torch.Tensor:
    if (dof, n) not in _GRID:
        _GRID[(dof, n)] = torch.as_tensor(chi2.ppf((np.arange(n) + 0.5) / n, dof), dtype=torch.float32)
    return _GRID[(dof, n)]


def _phi(x):
    return 0.5 * torch.erfc(-x / np.sqrt(2.0))


def intervention_probability(policy, mental, obs, c, beta=1.0, n_quantiles: int = 32):
    if policy.kind == "discrete":
        logp = torch.log_softmax(policy(obs), -1)
        q = torch.softmax(mental(obs), -1)
        delta = logp - (q * logp).sum(-1, keepdim=True)
        return (logp.exp() * _phi((delta - c) / beta)).sum(-1)
    mu, ls = policy(obs)
    mh, lsh = mental(obs)
    kc = ((torch.exp(2 * lsh) + (mh - mu) ** 2) / torch.exp(2 * ls)).sum(-1)
    x = _chi2_grid(mu.shape[-1], n_quantiles)
    return _phi((0.5 * (kc[:, None] - x[None, :]) - c) / beta).mean(-1)


@torch.no_grad()
def estimate_c(policy, mental, obs, rate: float, beta: float = 1.0, n_quantiles: int = 32) -> float:
    """c such that the mean predicted p(nu=1|s) over `obs` equals the observed rate (bisection)."""
    rate = float(np.clip(rate, 1e-3, 1 - 1e-3))
    mean_p = lambda c: float(intervention_probability(policy, mental, obs, c, beta, n_quantiles).mean())
    lo, hi = -1.0, 1.0
    while mean_p(lo) < rate and lo > -1e6:
        lo *= 2
    while mean_p(hi) > rate and hi < 1e6:
        hi *= 2
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mean_p(mid) > rate else (lo, mid)
    return 0.5 * (lo + hi)


def mile_loss(policy, mental, obs, a_h, nu, c, beta, lam, n_quantiles=32):
    p = intervention_probability(policy, mental, obs, c, beta, n_quantiles).clamp(1e-6, 1 - 1e-6)
    nuf = nu.float()
    bce = -(nuf * torch.log(p) + (1 - nuf) * torch.log1p(-p)).mean()
    nll = -policy.log_prob(obs[nu], a_h[nu]).mean() if nu.any() else torch.zeros(())
    return lam * bce + (1 - lam) * nll, {"bce": float(bce.detach()), "nll": float(nll.detach())}


def train_mile_on(prev, episodes, task, overrides: dict, seed: int, demos=None) -> MileBenchModel:
    """One MILE iteration on all `episodes` so far, warm-started from `prev` (a MileBenchModel, or
    the initial BenchPolicy, which then also initialises the mental model)."""
    cfg = MileBenchConfig.from_overrides(overrides)
    torch.manual_seed(seed)
    if isinstance(prev, MileBenchModel):
        policy, mental = prev.policy.clone(), prev.mental.clone()
    else:
        policy, mental = prev.clone(), prev.clone()
    obs = torch.as_tensor(np.concatenate([stack_episode(e["state"], cfg.frame_stack) for e in episodes]),
                          dtype=torch.float32)
    nu = torch.as_tensor(np.concatenate([e["nu"] for e in episodes]))
    a_h = np.concatenate([e["a_h"] for e in episodes])
    a_h = torch.as_tensor(np.nan_to_num(a_h) if policy.kind == "continuous" else np.maximum(a_h, 0),
                          dtype=torch.float32 if policy.kind == "continuous" else torch.int64)
    n_demo = 0
    if cfg.demos and demos:
        d_obs = np.concatenate([stack_episode(d["state"], cfg.frame_stack) for d in demos])
        d_act = np.concatenate([d["action"] for d in demos])
        n_demo = len(d_obs)
        obs = torch.cat([obs, torch.as_tensor(d_obs, dtype=torch.float32)])
        a_h = torch.cat([a_h, torch.as_tensor(d_act, dtype=a_h.dtype)])
    if cfg.mental not in ("joint", "frozen", "anchored"):
        raise ValueError(f"MILE option mental must be joint, frozen or anchored, got {cfg.mental!r}")
    n_col = len(nu)
    a_r = torch.as_tensor(np.concatenate([e["a_r"] for e in episodes]), dtype=a_h.dtype)
    c0 = cfg.c if cfg.c is not None else estimate_c(policy, mental, obs[:n_col], float(nu.float().mean()), cfg.beta,
                                                    cfg.n_quantiles)
    c = torch.nn.Parameter(torch.tensor(float(c0))) if cfg.learn_c else c0
    params = list(policy.parameters()) + (list(mental.parameters()) if cfg.mental != "frozen" else [])
    params += [c] if cfg.learn_c else []
    opt = torch.optim.Adam(params, lr=cfg.lr)
    g = torch.Generator().manual_seed(seed)
    steps = bc_steps(len(obs), cfg.epochs, cfg.batch_size, hi=cfg.max_steps)
    for _ in range(steps):
        i = torch.randint(n_col, (min(cfg.batch_size, n_col),), generator=g)
        loss, _ = mile_loss(policy, mental, obs[i], a_h[i], nu[i], c, cfg.beta, cfg.lam, cfg.n_quantiles)
        if n_demo:  # demonstrations: more samples of the person's policy, in the NLL term
            j = n_col + torch.randint(n_demo, (min(cfg.batch_size, n_demo),), generator=g)
            w = n_demo / (n_demo + int(nu.sum()))
            loss = loss - (1 - cfg.lam) * w * policy.log_prob(obs[j], a_h[j]).mean()
        if cfg.mental == "anchored":
            loss = loss - cfg.anchor * mental.log_prob(obs[i], a_r[i]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return MileBenchModel(policy, mental, float(c), cfg.beta)
