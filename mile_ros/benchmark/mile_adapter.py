"""MILE for the benchmark: the core loss (mile_ros.learning.mile) on BenchPolicy networks.

    J = mean over collected ticks of  lam * BCE(p(nu=1|s), nu) + (1 - lam) * nu * (-log pi(a_h|s))

with p(nu=1|s) in closed form (core quadrature). J's first term trains the policy pi and the
mental model pihat, the second only pi (`form="joint"`: the core's joint likelihood instead;
discrete actions use the core's (K+1)-class likelihood, Eq. 3 or joint). Each iteration warm-
starts pi and pihat from the previous iteration (`warm_start`, as in the paper) or from the
initial policy, which is also the person's presumed mental model.

The cost c: "rate" sets it once so that the mean predicted p over the data equals the observed
intervention rate; "mle" re-fits it every `c_every` steps by maximum likelihood of the nu labels
given the current pi and pihat (the log-likelihood is concave in c; a bounded 1-D search). The
rate rule fixes c while pi still equals pihat, where the threshold it implies has nothing to do
with how far apart pi and pihat must be for the person to take over; the MLE tracks that.

The mental model (`mental`): "joint" trains pihat by J1 only, as in the paper; on a few hundred
ticks pihat then follows pi to wherever the intervention labels pull it and the "no
intervention" ticks stop informing pi. "anchored" adds -log pihat(a_r|s) over all ticks (the
person's mental model predicts the robot they watch; a_r is recorded on every tick). "frozen"
keeps pihat at its warm start.

pi models the person's policy, so the person's demonstrations (the data of the initial policy,
which every baseline also re-uses) are samples of pi as much as the intervention actions are:
with `demos` they join the NLL term with the same weight per tick as an intervention.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from mile_ros.learning import mile as core
from mile_ros.learning.specs import FRAME_STACK, stack_frames
from mile_ros.learning.weighted_bc import BenchPolicy, bc_steps


@dataclass
class MileBenchConfig:
    c: float | None = None        # fixed c; None: from the data (c_fit)
    c_fit: str = "mle"            # mle | rate (see module docstring)
    c_every: int = 100            # mle: steps between re-fits of c
    beta: float = 1.0
    lam: float = 0.5
    form: str = "eq5"             # eq5 | joint (continuous); eq3 | joint (discrete; eq5 means eq3)
    epochs: float = 30.0
    max_steps: int = 2000
    batch_size: int = 256
    lr: float = 3e-4
    frame_stack: int = FRAME_STACK
    mental: str = "anchored"      # anchored | joint (paper: J1 alone trains pihat) | frozen
    anchor: float = 1.0           # mental="anchored": weight of -log pihat(a_r|s) over all ticks
    demos: bool = True            # the initial demonstrations join the NLL term
    warm_start: bool = False      # start from the previous iteration's model (the paper) or,
                                  # like the baselines, the initial policy

    @classmethod
    def from_overrides(cls, overrides: dict) -> "MileBenchConfig":
        names = {f.name for f in fields(cls)}
        bad = sorted(set(overrides) - names)
        if bad:
            raise ValueError(f"unknown MILE option(s) {', '.join(bad)}; "
                             f"valid: {', '.join(sorted(names))}")
        cfg = cls(**{k: _coerce(k, v, cls.__dataclass_fields__[k].type)
                     for k, v in overrides.items()})
        for name, allowed in (("c_fit", ("rate", "mle")), ("form", ("eq5", "eq3", "joint")),
                              ("mental", ("anchored", "joint", "frozen"))):
            if getattr(cfg, name) not in allowed:
                raise ValueError(f"MILE option {name} must be one of {', '.join(allowed)}, "
                                 f"got {getattr(cfg, name)!r}")
        return cfg

    def to_json(self) -> dict:
        return asdict(self)


def _coerce(name: str, value, type_name: str):
    """Command-line values ("False", 3, "1e-3") to the option's type, or a clear error."""
    try:
        if type_name == "bool":
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if isinstance(value, bool):
                return value
            raise ValueError
        if type_name == "int":
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if type_name in ("float", "float | None"):
            return None if value is None and "None" in type_name else float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"MILE option {name} must be {type_name}, got {value!r}") from None


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
        return log_intervention_probability(self.policy, self.mental, o, self.c,
                                            self.beta)[0].exp().numpy()


def log_intervention_probability(policy, mental, obs, c, beta=1.0):
    """(log p, log(1-p)) of intervening at each stacked observation, by the core closed forms."""
    if policy.kind == "discrete":
        return core.log_intervention_probability_discrete(policy(obs), mental(obs), c, beta)
    return core.log_intervention_probability_gaussian(*policy(obs), *mental(obs), c, beta)


def mile_loss(policy, mental, obs, a_h, nu, c, beta, lam, form="eq5"):
    """Compute the core MILE loss on a batch -> (loss, parts)."""
    if policy.kind == "discrete":
        return core.discrete_mile_loss(policy(obs), mental(obs), a_h, nu, c, beta,
                                       "joint" if form == "joint" else "eq3")
    return core.gaussian_mile_loss(*policy(obs), *mental(obs), a_h, nu, c, beta, lam,
                                   "joint" if form == "joint" else "eq5")


@torch.no_grad()
def fit_c_mle(policy, mental, obs, nu, beta: float, c0: float) -> float:
    """argmax_c sum log p(nu | s; c).

    The log-likelihood is concave in c (p is a log-concave smoothing of a step in c), so a
    bounded scalar search around `c0` finds it.
    """
    def nll(c):
        log_p, log_q = log_intervention_probability(policy, mental, obs, float(c), beta)
        return -float(torch.where(nu, log_p, log_q).sum())
    span = 10.0 * max(1.0, abs(c0))
    lo, hi = c0 - span, c0 + span
    res = minimize_scalar(nll, bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-3 * max(1.0, abs(c0))})
    return float(res.x)


def _dataset(episodes, demos, cfg, kind):
    obs = np.concatenate([stack_frames(e["state"], cfg.frame_stack) for e in episodes])
    nu = np.concatenate([e["nu"] for e in episodes]).astype(bool)
    a_h = np.concatenate([e["a_h"] for e in episodes])
    a_r = np.concatenate([e["a_r"] for e in episodes])
    dt = torch.int64 if kind == "discrete" else torch.float32
    a_h = np.maximum(a_h, 0) if kind == "discrete" else a_h  # -1 / NaN where nu=0 (ignored there)
    out = {"obs": torch.as_tensor(obs, dtype=torch.float32), "nu": torch.as_tensor(nu),
           "a_h": torch.as_tensor(a_h, dtype=dt), "a_r": torch.as_tensor(a_r, dtype=dt)}
    if cfg.demos and demos:
        out["demo_obs"] = torch.as_tensor(np.concatenate([stack_frames(d["state"], cfg.frame_stack)
                                                          for d in demos]),
                                          dtype=torch.float32)
        out["demo_act"] = torch.as_tensor(np.concatenate([d["action"] for d in demos]), dtype=dt)
    return out


def train_mile_on(prev, episodes, task, overrides: dict, seed: int, demos=None) -> MileBenchModel:
    """Run one MILE iteration on all `episodes` so far, starting from `prev`.

    `prev` is a MileBenchModel, or the initial BenchPolicy, which then also initialises the
    mental model.
    """
    cfg = MileBenchConfig.from_overrides(overrides)
    torch.manual_seed(seed)
    if isinstance(prev, MileBenchModel):
        policy, mental = prev.policy.clone(), prev.mental.clone()
    else:
        policy, mental = prev.clone(), prev.clone()
    d = _dataset(episodes, demos, cfg, policy.kind)
    obs, nu, a_h, a_r = d["obs"], d["nu"], d["a_h"], d["a_r"]
    n_col, n_demo = len(nu), len(d.get("demo_obs", ()))
    rate = float(nu.float().mean())
    if cfg.c is not None:
        c = float(cfg.c)
    else:
        with torch.no_grad():
            c = core.estimate_c(float(np.clip(rate, 1e-3, 1 - 1e-3)),
                                probability_fn=lambda c_: log_intervention_probability(
                                    policy, mental, obs, c_, cfg.beta)[0].exp())
    refit_c = cfg.c is None and cfg.c_fit == "mle" and 0 < int(nu.sum()) < n_col
    params = list(policy.parameters()) + (list(mental.parameters())
                                          if cfg.mental != "frozen" else [])
    opt = torch.optim.Adam(params, lr=cfg.lr)
    g = torch.Generator().manual_seed(seed)
    steps = bc_steps(n_col + n_demo, cfg.epochs, cfg.batch_size, hi=cfg.max_steps)
    demo_weight = (1 - cfg.lam) * n_demo / n_col  # per tick as much as an intervention's NLL
    for step in range(steps):
        if refit_c and step % cfg.c_every == 0:
            c = fit_c_mle(policy, mental, obs, nu, cfg.beta, c)
        i = torch.randint(n_col, (min(cfg.batch_size, n_col),), generator=g)
        loss, _ = mile_loss(policy, mental, obs[i], a_h[i], nu[i], c, cfg.beta, cfg.lam, cfg.form)
        if n_demo:
            j = torch.randint(n_demo, (min(cfg.batch_size, n_demo),), generator=g)
            loss = loss - demo_weight * policy.log_prob(d["demo_obs"][j], d["demo_act"][j]).mean()
        if cfg.mental == "anchored":
            loss = loss - cfg.anchor * mental.log_prob(obs[i], a_r[i]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    if refit_c:
        c = fit_c_mle(policy, mental, obs, nu, cfg.beta, c)
    return MileBenchModel(policy, mental, float(c), cfg.beta)
