"""Fit MILE (policy pi and mental model pihat, jointly) from recorded episodes.

ROS-free; works in a notebook.

Episode arrays (one dict per episode, T ticks):
    "state": float[T, S]   "a_r": float[T, A] | int[T]   "a_h": same, NaN (or -1) where nu=0
    "nu": bool[T]          optional "image": uint8[T, H, W, 3], optional "weight": float[T] (BC)

Choices (see the module docstring of `mile_ros.learning.mile` for the math):
  * Frame stacking and normalisation: `mile_ros.learning.specs`; the update budget and early
    stopping (no intervention tick thrown away): `mile_ros.learning.loop`.
  * c=None: c starts at the rate-matching root (mean p(nu=1|s) over the data = observed
    intervention rate) and is then learned with the networks (c_update="learn", the default,
    own learning rate c_lr); "rate" re-solves the root at every evaluation instead, "fixed"
    keeps the first root. Measured on simulated-person data (3 worlds x {600, 2000} ticks):
    learn and rate are on par (mean |p - p_true| 0.081/0.051 vs 0.076/0.057, policy error
    0.081/0.050 vs 0.084/0.054), both clearly better than fixed (0.140/0.106); learn is faster
    and is the default. A slow c_lr (3e-3) was worse (0.118/0.081).
  * beta_update="learn": the probit scale beta is learned with c (as log beta, at c_lr) by the
    same likelihood of the nu labels, starting from `beta`; "fixed" (default) keeps `beta`.
    With beta fixed at 1 and c fitted alone, the learner's implied tolerance can be far tighter
    than the person's, and then the "no intervention" term pulls pi toward the robot's own
    actions as hard as the interventions pull it toward the person's.
  * intervention_model="segments": a person who takes over and keeps control for a while
    decides at the takeover's start, not on every tick of it. p(nu=1|s) is then scored only on
    the ticks where the robot was in control when the person decided (`mile.continuation_ticks`:
    all but a takeover's second and later ticks), c is rate-matched on those ticks, and every
    intervention tick still teaches pi by its NLL. With one-tick takeovers it is the paper's
    model ("per_tick", the default) exactly.
  * mental_anchor (default 0.1; 0 = the paper's loss): weight of an extra BC term tying pihat
    to the robot's recorded actions a_r, so that pihat cannot drift along with pi and explain
    the "no intervention" ticks away. Measured (4 seeds): on a discrete simulated person whose
    no-intervention region is never labelled, accuracy vs the expert 0.63 (BC on a_h 0.64) ->
    0.74 (Eq. 3) / 0.85 (joint) with 0.1, the same with 1.0; on the continuous simulated
    person it costs a little (policy error 0.050 -> 0.058 with 0.1, 0.065 with 1.0). The
    joint form beat Eq. 3 on the discrete one (0.70 vs 0.63 without anchor).
  * Warm start from `init` copies the policy AND the mental model, the normaliser and c.
    Without `init`, both networks start from a short BC fit of the robot's actions a_r (the
    paper starts pi at the initial policy and pihat at a BC model of it).
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn

from mile_ros.learning import mile
from mile_ros.learning.bc import _bc_loss
from mile_ros.learning.config import MileConfig
from mile_ros.learning.loop import (
    _check_compatible,
    _Cost,
    _finite_actions,
    _Loop,
    _make_network,
    _select_and_fit,
    _Tensors,
    prepare_episodes,
    resolve_device,
    seed_everything,
)
from mile_ros.learning.model import MileModel, _probability
from mile_ros.learning.specs import ActionSpec, Normalizer, ObsSpec


def _mile_loss(policy, mental, tensors, c, config, action_spec, form, scored=None):
    def loss_fn(idx):
        idx = tensors.index(idx)
        sc = None if scored is None else scored[idx]
        obs = tensors.obs_at(idx)
        if config.train_mental:
            m_out = mental(obs)
        else:
            with torch.no_grad():
                m_out = mental(obs)
        out = policy(obs)
        if action_spec.continuous:
            loss, parts = mile.gaussian_mile_loss(out[0], out[1], m_out[0], m_out[1],
                                                  tensors.a_h[idx], tensors.nu[idx], c(),
                                                  c.beta(), config.lam, form, scored=sc,
                                                  nll_beta=config.nll_beta)
        else:
            loss, parts = mile.discrete_mile_loss(out, m_out, tensors.a_h[idx],
                                                  tensors.nu[idx], c(), c.beta(), form,
                                                  scored=sc)
        if config.mental_anchor > 0 and config.train_mental and bool(tensors.has_a_r.any()):
            # the person's mental model is a belief about the robot, whose actions a_r we see
            anchor = _mean_a_r_nll(m_out, tensors.a_r[idx], tensors.has_a_r[idx], action_spec,
                                   config.nll_beta)
            loss = loss + config.mental_anchor * anchor
            parts = dict(parts, loss=float(loss.detach()), mental_anchor=float(anchor.detach()))
        if config.policy_anchor > 0 and bool(tensors.has_a_r.any()):
            robot_drove = tensors.has_a_r[idx] * (~tensors.nu[idx].bool()).float()
            anchor = _mean_a_r_nll(out, tensors.a_r[idx], robot_drove, action_spec,
                                   config.nll_beta)
            loss = loss + config.policy_anchor * anchor
            parts = dict(parts, loss=float(loss.detach()), policy_anchor=float(anchor.detach()))
        return loss, parts
    return loss_fn


def _mean_a_r_nll(out, a_r, ok, action_spec, nll_beta: float = 0.0):
    """Mean -log net(a_r|s) (beta-NLL, `mile.gaussian_nll`) over the rows where `ok` (0/1)."""
    if action_spec.continuous:
        nll = mile.gaussian_nll(out[0], out[1], torch.nan_to_num(a_r), nll_beta)
    else:
        nll = nn.functional.cross_entropy(out, a_r.clamp(min=0), reduction="none")
    return (nll * ok).sum() / ok.sum().clamp(min=1)


def _mean_probability(policy, mental, tensors, c, beta, action_spec) -> np.ndarray:
    ps = []
    with torch.no_grad():
        for s in range(0, tensors.n, 4096):
            idx = torch.arange(s, min(s + 4096, tensors.n))
            ps.append(_probability(policy, mental, tensors.obs_at(idx), c, beta,
                                   action_spec).cpu())
    return torch.cat(ps).double().numpy()


def _rate_c(policy, mental, tensors, rate, beta, action_spec, c_hint=None, idx=None) -> float:
    """C such that the mean predicted p(nu=1|s) over the ticks `idx` (all) equals `rate`."""
    idx = torch.arange(tensors.n) if idx is None else torch.as_tensor(idx)
    outs = _outputs(policy, tensors, idx), _outputs(mental, tensors, idx)
    if action_spec.continuous:
        (mu, ls), (muh, lsh) = outs
        return mile.estimate_c(rate, mu=mu, log_std=ls, mu_hat=muh, log_std_hat=lsh, beta=beta,
                               c_hint=c_hint, tol=1e-6)
    return mile.estimate_c(rate, policy_logits=outs[0], mental_logits=outs[1], beta=beta,
                           c_hint=c_hint, tol=1e-6)


def _outputs(net, tensors, idx, chunk: int = 4096):
    """Return net's outputs on the ticks `idx`, on the CPU, computed a chunk at a time."""
    parts = []
    with torch.no_grad():
        for s in range(0, len(idx), chunk):
            out = net(tensors.obs_at(idx[s:s + chunk]))
            parts.append(tuple(o.cpu() for o in out) if isinstance(out, tuple) else out.cpu())
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(p) for p in zip(*parts))
    return torch.cat(parts)


def _start_networks(init, data, obs_spec, action_spec, config, device, metrics):
    """(policy, mental, normalizer, tensors): from `init`, or a BC fit of a_r for both."""
    if init is not None:
        _check_compatible(init, obs_spec, action_spec)
        metrics["warm_start"] = "init (policy and mental model)"
        tensors = _Tensors(data, init.normalizer, action_spec, device)
        return (copy.deepcopy(init.policy).to(device), copy.deepcopy(init.mental).to(device),
                init.normalizer, tensors)
    normalizer = Normalizer.fit(data["raw"])
    tensors = _Tensors(data, normalizer, action_spec, device)
    policy = _make_network(obs_spec, action_spec, config).to(device)
    metrics["warm_start"] = "none"
    has_ar = _finite_actions(data["a_r"], action_spec)
    if config.pretrain_updates > 0 and has_ar.any():
        bc_idx = np.flatnonzero(has_ar)
        gen = torch.Generator().manual_seed(config.seed + 1)
        loop = _Loop(_bc_loss(policy, tensors, tensors.a_r, action_spec,
                              torch.ones(tensors.n, device=device), config.nll_beta),
                     [policy], config, gen)
        loop.run(bc_idx, config.pretrain_updates)
        metrics["warm_start"] = f"BC on a_r ({config.pretrain_updates} updates), both networks"
    return policy, copy.deepcopy(policy), normalizer, tensors


def train_mile(episodes, obs_spec: ObsSpec, action_spec: ActionSpec,
               config: MileConfig | None = None, init: MileModel | None = None,
               progress: bool = True, device="cpu") -> tuple[MileModel, dict]:
    """Fit pi and pihat jointly with the MILE loss -> (MileModel, metrics).

    `device` ("cpu", "cuda", "auto": `loop.resolve_device`) is where it trains; the model is
    returned on the CPU.
    """
    config = copy.deepcopy(config or MileConfig()).validate(action_spec)
    device = resolve_device(device)
    seed_everything(config.seed)
    t0 = time.perf_counter()
    form = config.resolved_form(action_spec)
    data = prepare_episodes(episodes, obs_spec, action_spec)
    n, n_int = data["nu"].shape[0], int(data["nu"].sum())
    metrics = {"n_interventions": n_int, "rate_observed": n_int / n, "form": form,
               "device": str(device)}
    policy, mental, normalizer, tensors = _start_networks(init, data, obs_spec, action_spec,
                                                          config, device, metrics)

    # which ticks are intervention decisions (all, or all but takeover continuations)
    scored = None
    if config.intervention_model == "segments":
        keep = ~mile.continuation_ticks(data["nu"], data["tick"] == 0)
        scored = torch.from_numpy(keep).to(device)
        n_dec, n_on = int(keep.sum()), int((data["nu"] & keep).sum())
        metrics.update(decision_ticks=n_dec, onsets=n_on)
    else:
        keep, n_dec, n_on = None, n, n_int
    # c: given, warm-started, or the rate-matching root; then learned / re-matched / fixed
    rate_smoothed = (n_on + 0.5) / (n_dec + 1.0)
    dec_idx = None if keep is None else np.flatnonzero(keep)
    if config.c is not None:
        c0, mode = float(config.c), "given (fixed)"
    else:
        c0 = _rate_c(policy, mental, tensors, rate_smoothed, config.beta, action_spec,
                     idx=dec_idx)
        mode = {"learn": "rate-matched, then learned", "rate": "rate-matched at every evaluation",
                "fixed": "rate-matched once"}[config.c_update]
    learn_beta = config.beta_update == "learn"
    cost = _Cost(c0, learn=config.c is None and config.c_update == "learn",
                 beta=config.beta, learn_beta=learn_beta, device=device)
    on_eval = None
    if config.c is None and config.c_update == "rate":
        def on_eval():
            cost.set(_rate_c(policy, mental, tensors, rate_smoothed, cost.get_beta(),
                             action_spec, c_hint=cost.get(), idx=dec_idx))

    modules = [policy, mental] if config.train_mental else [policy]
    gen = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    loss_fn = _mile_loss(policy, mental, tensors, cost, config, action_spec, form, scored)
    fit_metrics = _select_and_fit(loss_fn, modules, data, config, gen, rng, progress, "MILE",
                                  cost, on_eval)
    c_final, beta_final = cost.get(), cost.get_beta()
    p = _mean_probability(policy, mental, tensors, c_final, beta_final, action_spec)
    metrics.update(fit_metrics)
    metrics.update(c=c_final, c_initial=c0, c_mode=mode, beta=beta_final,
                   beta_mode="learned" if learn_beta else "given (fixed)",
                   rate_predicted=float(p.mean()), time_s=time.perf_counter() - t0)
    model = MileModel(policy.cpu(), mental.cpu(), obs_spec, action_spec, normalizer, c_final,
                      beta_final, config)
    model.metrics = metrics
    return model, metrics
