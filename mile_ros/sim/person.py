"""The paper's simulated person (its Section V): a probit decision with the expert as pi_h.

At stacked state s the person intervenes with probability (the paper's Eq. 2, pi = the expert,
pihat = the person's mental model of the robot)

    p(nu=1|s) = E_{a~pi}[ Phi( (E_{a'~pihat}[log pi(a|s) - log pi(a'|s)] - c) / beta ) ]

computed in closed form (Gaussian: a chi-square expectation on a fixed quantile grid; discrete: a
sum over actions). nu ~ Bernoulli(p). When nu=1 the person's action is a sample of the expert's
Gaussian N(mu(s), sigma^2) (`sample_actions`, the benchmark's default: a person is not a
deterministic label, and an exact label drives a learner's sigma to its floor) or its mean;
discrete: the heuristic's own choice. The person never sees the robot's action. The mental
model is the paper's: a BC policy fitted to rollouts of the initial policy, fixed; or
(`ExecutedPolicy`) the policy the robot currently runs, as a deterministic policy server
executes it (its mean action, no spread).

The probit scale: `beta_ratio` > 0 makes it grow with the cost, beta_eff = max(beta,
beta_ratio * |c|) (`person_scale`). With sigma = 0.1 the log-likelihood gap is in the hundreds
where the robot is wrong, so a fixed beta = 1 makes the decision a hard threshold (p below 0.01
or above 0.99 on 91-97% of ticks); with beta_ratio = 0.5, p = Phi(gap / c - 2) -- 2% where the
gap is 0, 50% at gap = 2c.

This module is numpy-only on purpose: it is the "ground truth" person, independent of the
learner's code (mile_ros.learning.mile computes the same quantities differentiably for training).
"""
from __future__ import annotations

from collections import deque
from functools import lru_cache

import numpy as np
from scipy.special import ndtr
from scipy.stats import chi2

from mile_ros.learning.specs import FRAME_STACK, FrameStacker
from mile_ros.sim.experts import ExpertInfo

N_QUANTILES = 128


@lru_cache(maxsize=16)
def _chi2_grid(dof: int, n: int = N_QUANTILES) -> np.ndarray:
    return chi2.ppf((np.arange(n) + 0.5) / n, dof)


def gaussian_kc(mu, log_std, mu_hat, log_std_hat) -> np.ndarray:
    """Kc = sum_d (sigma_hat^2 + (mu_hat - mu)^2) / sigma^2, per row ([B,D] inputs -> [B])."""
    var = np.exp(2 * np.asarray(log_std))
    return np.sum((np.exp(2 * np.asarray(log_std_hat)) + (np.asarray(mu_hat) - mu) ** 2) / var,
                  axis=-1)


def probit_gaussian(kc: np.ndarray, dof: int, c: float, beta: float = 1.0) -> np.ndarray:
    """p(nu=1|s) from Kc ([B]) for D=dof action dimensions."""
    x = _chi2_grid(int(dof))
    return ndtr((0.5 * (np.asarray(kc)[..., None] - x) - c) / beta).mean(-1)


def discrete_delta(expert_logits, mental_logits) -> np.ndarray:
    """Delta_a = log pi(a) - sum_a' pihat(a') log pi(a'), [B,K]."""
    logp = _log_softmax(np.asarray(expert_logits, dtype=np.float64))
    q = np.exp(_log_softmax(np.asarray(mental_logits, dtype=np.float64)))
    return logp - np.sum(q * logp, axis=-1, keepdims=True)


def probit_discrete(expert_logits, delta, c: float, beta: float = 1.0) -> np.ndarray:
    p_a = np.exp(_log_softmax(np.asarray(expert_logits, dtype=np.float64)))
    return np.sum(p_a * ndtr((delta - c) / beta), axis=-1)


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


class ProbitStats:
    """The c-independent part of the probit model at a batch of states.

    So that p(c) is cheap to evaluate for many c (calibration) or once per tick (decisions).
    """

    def __init__(self, expert_infos: list[ExpertInfo], mental_dist):
        if expert_infos[0].logits is not None:
            self.kind = "discrete"
            self.expert_logits = np.stack([e.logits for e in expert_infos])
            self.delta = discrete_delta(self.expert_logits, mental_dist)
        else:
            self.kind = "continuous"
            mu = np.stack([e.mean for e in expert_infos])
            ls = np.stack([e.log_std for e in expert_infos])
            mu_hat, ls_hat = mental_dist
            self.kc = gaussian_kc(mu, ls, np.asarray(mu_hat).reshape(mu.shape),
                                  np.asarray(ls_hat).reshape(mu.shape))
            self.dof = mu.shape[-1]

    def p(self, c: float, beta: float = 1.0) -> np.ndarray:
        if self.kind == "discrete":
            return probit_discrete(self.expert_logits, self.delta, c, beta)
        return probit_gaussian(self.kc, self.dof, c, beta)


def mental_distribution(mental_model, stacked_obs):
    """(mu, log_std) or logits of the mental model at [B, k*S] stacked observations."""
    return mental_model.action_distribution(
        np.atleast_2d(np.asarray(stacked_obs, dtype=np.float32)))


class ExecutedPolicy:
    """The person's belief pihat = the robot's policy as a deterministic policy server runs it.

    `policy`: anything with `.action_distribution(stacked_obs)` -> (mu, log_std) or logits. The
    robot executes the mean, so the belief is the mean with a negligible spread (std
    `BELIEF_STD`; the policy's own std, 2-7 for MILE's trained policies, would make Kc ~ 1e4
    and the person take over every tick). Discrete policies: their logits, unchanged.
    """

    BELIEF_STD = 1e-3

    def __init__(self, policy):
        self.policy = policy

    def action_distribution(self, stacked_obs):
        out = self.policy.action_distribution(stacked_obs)
        if not isinstance(out, tuple):
            return out
        mu = np.asarray(out[0])
        return mu, np.full(mu.shape, np.log(self.BELIEF_STD))


class SimulatedPerson:
    """SimulatedPerson(expert, mental_model, c, beta, seed).

    expert: callable raw_state -> ExpertInfo (e.g. `task.expert`), used when decide() gets no
        expert info; mental_model: anything with `.action_distribution(stacked_obs[B, k*S])` ->
        (mu, log_std) or logits (a MileModel from train_bc); state_dim: S, to take the current
        state out of a stacked observation (current state first).
    decide(stacked_obs, expert_info=None) -> (nu: bool, a_h or None, p: float).
    """

    def __init__(self, expert, mental_model, c: float, beta: float = 1.0, seed: int = 0,
                 state_dim: int | None = None, beta_ratio: float = 0.0,
                 sample_actions: bool = False):
        self.expert, self.mental_model = expert, mental_model
        self.c, self.beta = float(c), float(beta)
        self.beta_ratio, self.sample_actions = float(beta_ratio), bool(sample_actions)
        self.state_dim = state_dim
        self.rng = np.random.default_rng(seed)

    @property
    def scale(self) -> float:
        """The probit scale in use (see `person_scale`)."""
        return person_scale(self.c, self.beta, self.beta_ratio)

    def reseed(self, seed) -> None:
        self.rng = np.random.default_rng(seed)

    def probability(self, stacked_obs, expert_info: ExpertInfo | None = None) -> float:
        if expert_info is None:
            s = np.asarray(stacked_obs)[: self.state_dim] if self.state_dim else stacked_obs
            expert_info = self.expert(s)
        stats = ProbitStats([expert_info], mental_distribution(self.mental_model, stacked_obs))
        return float(stats.p(self.c, self.scale)[0])

    def decide(self, stacked_obs, expert_info: ExpertInfo | None = None):
        if expert_info is None:
            s = np.asarray(stacked_obs)[: self.state_dim] if self.state_dim else stacked_obs
            expert_info = self.expert(s)
        p = self.probability(stacked_obs, expert_info)
        nu = bool(self.rng.random() < p)
        return nu, (self._action(expert_info) if nu else None), p

    def _action(self, e: ExpertInfo):
        if not self.sample_actions or e.mean is None:
            return e.action
        noise = np.exp(e.log_std) * self.rng.standard_normal(np.shape(e.mean))
        return np.clip(e.mean + noise, -1.0, 1.0)


class SegmentPerson(SimulatedPerson):
    """The "segments" person: takes over on the paper's hazard, drives, hands back when safe.

    A person at a controller does not decide afresh every tick. On robot ticks the onset hazard
    is the paper's p(nu=1|s) (the per-tick person's probability): a takeover is decided with that
    probability and begins `reaction_ticks` later (the robot keeps control meanwhile). In control
    the person drives with the expert (sampled, as the per-tick person acts); it hands back once
    it has held control for at least `dwell_ticks` and p(s) -- the hazard as if the robot were in
    control -- has stayed below `handback_p` for the last `dwell_ticks` ticks. So no takeover is
    shorter than dwell_ticks, and none starts earlier than reaction_ticks after the hazard fired.
    Deterministic per reseed(), which also starts a new episode.

    `stall_ticks` > 0 adds the trigger a person watching the arm has and the hazard lacks: the
    robot has held still -- every state dimension within `stall_tol` of its range over the last
    `stall_ticks` robot-controlled ticks -- while the episode is still running, so the person
    takes over (after the same reaction delay) and hands back by the same rule. Off (0) by
    default; the random stream is the same either way.

    Why: on Meta-World drawer-open the expert recovers every failing episode when it keeps
    control (15/15 from tick 0, 20, 50, 100 or 200), while alternating expert and robot every
    other tick succeeds no more than the robot alone (7/15 vs 6/15) -- a per-tick person whose
    p is near 0.5 in trouble is that coin flip.
    """

    def __init__(self, *args, reaction_ticks: int = 3, dwell_ticks: int = 10,
                 handback_p: float = 0.1, stall_ticks: int = 0, stall_tol: float = 0.003,
                 **kwargs):
        super().__init__(*args, **kwargs)
        if int(reaction_ticks) < 0 or int(dwell_ticks) < 1 or not 0 < handback_p < 1:
            raise ValueError("segment person: reaction_ticks >= 0, dwell_ticks >= 1 and "
                             f"0 < handback_p < 1, got {reaction_ticks}, {dwell_ticks}, "
                             f"{handback_p}")
        if int(stall_ticks) < 0 or not stall_tol > 0:
            raise ValueError(f"segment person: stall_ticks >= 0 and stall_tol > 0, got "
                             f"{stall_ticks}, {stall_tol}")
        self.reaction_ticks, self.dwell_ticks = int(reaction_ticks), int(dwell_ticks)
        self.handback_p = float(handback_p)
        self.stall_ticks, self.stall_tol = int(stall_ticks), float(stall_tol)
        self._new_episode()

    def _new_episode(self) -> None:
        self.in_control, self.pending, self.held, self.calm = False, None, 0, 0
        self.still = deque(maxlen=self.stall_ticks + 1)

    def reseed(self, seed) -> None:
        super().reseed(seed)
        self._new_episode()

    def decide(self, stacked_obs, expert_info: ExpertInfo | None = None):
        if expert_info is None:
            s = np.asarray(stacked_obs)[: self.state_dim] if self.state_dim else stacked_obs
            expert_info = self.expert(s)
        p = self.probability(stacked_obs, expert_info)
        if self.in_control and self._keeps_control(p):
            return True, self._action(expert_info), p
        stalled = self._stalled(stacked_obs)
        if self.pending is None and (self.rng.random() < p or stalled):
            self.pending = self.reaction_ticks
        if self.pending is not None:
            if self.pending == 0:
                self.in_control, self.pending, self.held = True, None, 1
                self.still.clear()
                self.calm = int(p < self.handback_p)
                return True, self._action(expert_info), p
            self.pending -= 1
        return False, None, p

    def _stalled(self, stacked_obs) -> bool:
        """Record this robot tick's state; True once it has held still for stall_ticks."""
        if not self.stall_ticks:
            return False
        s = np.asarray(stacked_obs, dtype=float)
        self.still.append(s[: self.state_dim] if self.state_dim else s)
        if len(self.still) < self.still.maxlen:
            return False
        return bool(np.ptp(np.asarray(self.still), axis=0).max() < self.stall_tol)

    def _keeps_control(self, p: float) -> bool:
        self.held += 1
        self.calm = self.calm + 1 if p < self.handback_p else 0
        if self.held > self.dwell_ticks and self.calm >= self.dwell_ticks:
            self.in_control = False
        return self.in_control


def person_scale(c: float, beta: float, beta_ratio: float = 0.0) -> float:
    """Return the person's probit scale: max(beta, beta_ratio * |c|) (module docstring)."""
    return max(float(beta), float(beta_ratio) * abs(float(c)))


def calibrate_c(stats: ProbitStats, target_rate: float, beta: float = 1.0,
                tol: float = 1e-4, beta_ratio: float = 0.0) -> float:
    """Find the c at which the mean intervention probability equals `target_rate`.

    The mean is over the states in `stats` (p decreases monotonically in c; bisection); the
    scale at each c is person_scale(c, beta, beta_ratio).
    """
    if not 0.0 < target_rate < 1.0:
        raise ValueError(f"target intervention rate must be in (0, 1), got {target_rate}")

    def rate(c):
        return stats.p(c, person_scale(c, beta, beta_ratio)).mean()
    lo, hi = -1.0, 1.0
    while rate(lo) < target_rate and lo > -1e9:
        lo *= 2
    while rate(hi) > target_rate and hi < 1e9:
        hi *= 2
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if rate(mid) > target_rate:
            lo = mid
        else:
            hi = mid
        if hi - lo < tol:
            break
    return 0.5 * (lo + hi)


def collect_episode(task, policy, person, seed: int, frame_stack: int, person_seed) -> dict:
    """One episode under the person: the policy proposes, the person decides from the state."""
    person.reseed(person_seed)
    stacker = FrameStacker(frame_stack)
    obs = task.reset(seed)
    so = stacker.reset(obs)
    S, AR, AH, NU, EX, P = [], [], [], [], [], []
    discrete = task.kind == "discrete"
    info, ret = {"success": False}, 0.0
    for _ in range(task.max_steps):
        a_r = policy.act(so)
        e = task.expert(obs)
        nu, a_h, p = person.decide(so, e)
        executed = a_h if nu else a_r
        S.append(obs), AR.append(a_r), NU.append(nu), EX.append(executed), P.append(p)
        AH.append(a_h if nu else (-1 if discrete else np.full(task.act_dim, np.nan)))
        obs, r, done, info = task.step(executed)
        ret += r
        so = stacker.push(obs)
        if done:
            break
    dt = np.int64 if discrete else np.float64
    return {"state": np.asarray(S), "a_r": np.asarray(AR, dt), "a_h": np.asarray(AH, dt),
            "nu": np.asarray(NU, bool), "executed": np.asarray(EX, dt), "p": np.asarray(P),
            "success": bool(info["success"]), "return": ret, "seed": int(seed)}


def closed_loop_stats(task, policy, person, seeds,
                      frame_stack: int = FRAME_STACK) -> tuple[float, float]:
    """(fraction of ticks with an intervention, episode success) of `policy` under `person`.

    The person's random stream is fixed per episode, so figures for different c are comparable.
    """
    eps = [collect_episode(task, policy, person, s, frame_stack, [s, 99]) for s in seeds]
    rate = float(sum(e["nu"].sum() for e in eps) / sum(len(e["nu"]) for e in eps))
    return rate, float(np.mean([e["success"] for e in eps]))


def calibrate_c_closed_loop(task, policy, person, seeds, target_rate: float,
                            frame_stack: int = FRAME_STACK,
                            rounds: int = 8) -> tuple[float, float, float]:
    """Refine person.c so that the intervention rate *in closed loop* is close to `target_rate`.

    (Interventions change the states that follow.) Bracket, then bisect.
    -> (c, achieved rate, success of those episodes).
    """
    seen = {}

    def rate(c):
        person.c = c
        seen[c] = closed_loop_stats(task, policy, person, seeds, frame_stack)
        return seen[c][0]

    c0 = person.c
    r0 = rate(c0)
    step = max(1.0, abs(c0)) * 0.25
    lo, hi = (c0, None) if r0 > target_rate else (None, c0)  # lo: rate too high; hi: too low
    c, r = c0, r0
    for _ in range(12):
        if lo is not None and hi is not None:
            break
        c = c - step if lo is None else c + step
        step *= 2
        r = rate(c)
        lo, hi = (c, hi) if r > target_rate else (lo, c)
    best = (abs(r0 - target_rate), c0, r0)
    if lo is not None and hi is not None:
        for _ in range(rounds):
            c = 0.5 * (lo + hi)
            r = rate(c)
            best = min(best, (abs(r - target_rate), c, r))
            lo, hi = (c, hi) if r > target_rate else (lo, c)
    _, c, r = best
    person.c = c
    return c, r, seen[c][1]
