"""Baselines, each from its paper's rule, trained on the same data and initial policy as MILE.

Data: `episodes` is every episode collected so far by this method (all iterations), each a
dict {"state": [T,S], "a_r", "a_h" (NaN / -1 where nu=0), "nu": bool[T], "executed": the
action applied}; `demos` are the initial policy's own demonstrations {"state", "action"}.
Every weighted-BC baseline re-fits, at every iteration, a copy of the initial policy on the
aggregated data set (warm start from the initial weights, training length proportional to the
data).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mile_ros.learning.specs import FRAME_STACK, stack_frames
from mile_ros.learning.weighted_bc import BenchPolicy, bc_steps, fit_weighted


@dataclass
class BaselineConfig:
    frame_stack: int = FRAME_STACK
    epochs: float = 30.0               # passes over the data per re-fit (clipped, see bc_steps)
    max_steps: int = 2000
    lr: float = 3e-4                  # same as MILE's
    sirius_window: int = 5             # ticks before an intervention that Sirius discards
    rlif_gamma: float = 0.95
    rlif_expectile: float = 0.7
    rlif_awr_beta: float = 3.0
    rlif_steps: int = 1500
    rlif_hidden: tuple = (128, 128)


def _stack(episodes, k):
    return np.concatenate([stack_frames(e["state"], k) for e in episodes]) if episodes else None


def _cat(episodes, key):
    return np.concatenate([np.asarray(e[key]) for e in episodes])


def _refit(initial: BenchPolicy, obs, act, w, cfg: BaselineConfig, seed: int) -> BenchPolicy:
    pol = initial.clone()
    n_eff = int(np.count_nonzero(w))
    fit_weighted(pol, obs, act, w, steps=bc_steps(n_eff, cfg.epochs, hi=cfg.max_steps),
                 lr=cfg.lr, seed=seed)
    return pol


def train_bc_intervention(initial, episodes, demos, cfg: BaselineConfig, seed: int = 0):
    """BC on intervention ticks only.

    Behaviour cloning of the person's action a_h on the ticks where the person took over (nu=1),
    aggregated over all iterations; the robot's own ticks and the demonstrations are not used.
    Fine-tunes the initial policy.
    """
    obs, nu = _stack(episodes, cfg.frame_stack), _cat(episodes, "nu")
    if not nu.any():
        return initial.clone()
    return _refit(initial, obs[nu], _cat(episodes, "a_h")[nu], np.ones(nu.sum()), cfg, seed)


def train_hg_dagger(initial, episodes, demos, cfg: BaselineConfig, seed: int = 0):
    """HG-DAgger (Kelly et al., 2019).

    The expert gates control; only the states where the expert took over are labelled (with the
    expert's action) and aggregated with the initial demonstration set D0; the policy is
    re-trained by BC on the aggregate D0 u D_int each iteration.
    """
    obs_d, act_d = _stack(demos, cfg.frame_stack), _cat(demos, "action")
    if episodes:
        nu = _cat(episodes, "nu")
        obs_d = np.concatenate([obs_d, _stack(episodes, cfg.frame_stack)[nu]])
        act_d = np.concatenate([act_d, _cat(episodes, "a_h")[nu].astype(act_d.dtype)])
    return _refit(initial, obs_d, act_d, np.ones(len(obs_d)), cfg, seed)


def train_iwr(initial, episodes, demos, cfg: BaselineConfig, seed: int = 0):
    """IWR, intervention-weighted regression (Mandlekar et al., 2020).

    BC on every executed tick (robot ticks labelled with the robot's action, intervention ticks
    with the person's) plus the demonstrations, re-weighted so that intervention ticks and
    non-intervention ticks each carry half of the total weight -- the scarce interventions count
    as much as everything else.
    """
    obs = np.concatenate([_stack(demos, cfg.frame_stack), _stack(episodes, cfg.frame_stack)])
    act = np.concatenate([_cat(demos, "action"),
                          _cat(episodes, "executed").astype(_cat(demos, "action").dtype)])
    is_int = np.concatenate([np.zeros(sum(len(d["state"]) for d in demos), bool),
                             _cat(episodes, "nu")])
    w = np.where(is_int, 0.5 / max(is_int.sum(), 1), 0.5 / max((~is_int).sum(), 1))
    if not is_int.any():
        w = np.ones(len(obs))
    return _refit(initial, obs, act, w, cfg, seed)


def sirius_weights(nu_per_episode: list[np.ndarray], window: int, n_demo: int) -> np.ndarray:
    """Sirius class weights for [demos..., episode ticks...].

    Demo 1, robot 1, pre-intervention 0, intervention scaled so the intervention class carries
    half of the total weight.
    """
    classes = [np.zeros(n_demo, int)]  # 0 demo, 1 robot, 2 pre-intervention, 3 intervention
    for nu in nu_per_episode:
        c = np.where(nu, 3, 1)
        onsets = np.flatnonzero(nu & ~np.r_[False, nu[:-1]])
        for t in onsets:
            pre = c[max(0, t - window):t]
            pre[pre == 1] = 2
        classes.append(c)
    c = np.concatenate(classes)
    w = np.where(c == 2, 0.0, 1.0)
    n_int, rest = (c == 3).sum(), w[c != 3].sum()
    if n_int:
        w[c == 3] = rest / n_int if rest > 0 else 1.0
    return w


def train_sirius(initial, episodes, demos, cfg: BaselineConfig, seed: int = 0):
    """Sirius (Liu et al., 2022): weighted BC over all deployment data with four classes.

    Demonstrations and autonomous robot ticks weight 1, the robot ticks in a short window before
    each intervention (the behaviour that made the person intervene) weight 0, and intervention
    ticks up-weighted so that the intervention class carries as much weight as all others.
    (Sirius's memory management only matters for data larger than here and is omitted.)
    """
    obs = np.concatenate([_stack(demos, cfg.frame_stack), _stack(episodes, cfg.frame_stack)])
    act = np.concatenate([_cat(demos, "action"),
                          _cat(episodes, "executed").astype(_cat(demos, "action").dtype)])
    w = sirius_weights([np.asarray(e["nu"], bool) for e in episodes], cfg.sirius_window,
                       sum(len(d["state"]) for d in demos))
    return _refit(initial, obs, act, w, cfg, seed)


def _mlp(i, o, hidden):
    layers, d = [], i
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    return nn.Sequential(*layers, nn.Linear(d, o))


def rlif_transitions(episodes, demos, k: int):
    """(s, a, r, s', done) over demos and collected episodes.

    r = -1 on the tick where an intervention starts (nu goes 0 -> 1), else 0; the action is the
    executed one.
    """
    S, A, R, S2, D = [], [], [], [], []
    for e, is_demo in [(d, True) for d in demos] + [(e, False) for e in episodes]:
        st = stack_frames(e["state"], k)
        T = len(st)
        a = np.asarray(e["action"] if is_demo else e["executed"])
        nu = np.zeros(T, bool) if is_demo else np.asarray(e["nu"], bool)
        r = -(nu & ~np.r_[False, nu[:-1]]).astype(np.float32)
        S.append(st), A.append(a), R.append(r), S2.append(np.r_[st[1:], st[-1:]])
        d = np.zeros(T, np.float32)
        d[-1] = 1.0
        D.append(d)
    return [np.concatenate(x) for x in (S, A, R, S2, D)]


def train_rlif(initial, episodes, demos, cfg: BaselineConfig, seed: int = 0):
    """RLIF (Luo et al., 2023): off-policy RL whose only reward is the intervention itself.

    The reward is -1 on the tick where the person starts intervening, 0 elsewhere; all executed
    transitions (robot and person) plus the demonstrations form the replay data, and no task
    reward is used. Kept small and CPU-cheap with implicit Q-learning (twin Q, expectile V,
    discount 0.95) and advantage-weighted extraction of the policy, warm-started from the initial
    policy.
    """
    torch.manual_seed(seed)
    s, a, r, s2, d = rlif_transitions(episodes, demos, cfg.frame_stack)
    def norm(x):
        return (torch.as_tensor(x, dtype=torch.float32) - initial.obs_mean) / initial.obs_std

    S, S2 = norm(s), norm(s2)
    R, D = torch.as_tensor(r), torch.as_tensor(d)
    discrete = initial.kind == "discrete"
    if discrete:
        A = torch.as_tensor(a, dtype=torch.int64)
        q_in, q_out = S.shape[1], initial.act_dim
    else:
        A = torch.as_tensor(a, dtype=torch.float32)
        q_in, q_out = S.shape[1] + A.shape[1], 1
    qs = nn.ModuleList([_mlp(q_in, q_out, cfg.rlif_hidden) for _ in range(2)])
    q_targ = copy.deepcopy(qs)
    v = _mlp(S.shape[1], 1, cfg.rlif_hidden)
    opt_q = torch.optim.Adam(qs.parameters(), lr=3e-4)
    opt_v = torch.optim.Adam(v.parameters(), lr=3e-4)

    def q_of(net, s_, a_):
        return (net(s_).gather(1, a_.view(-1, 1)).squeeze(1) if discrete
                else net(torch.cat([s_, a_], 1)).squeeze(1))

    g = torch.Generator().manual_seed(seed)
    n = len(S)
    for _ in range(cfg.rlif_steps):
        i = torch.randint(n, (min(256, n),), generator=g)
        with torch.no_grad():
            qt = torch.min(q_of(q_targ[0], S[i], A[i]), q_of(q_targ[1], S[i], A[i]))
        diff = qt - v(S[i]).squeeze(1)
        wexp = torch.where(diff > 0, cfg.rlif_expectile, 1 - cfg.rlif_expectile)
        opt_v.zero_grad()
        (wexp * diff ** 2).mean().backward()
        opt_v.step()
        with torch.no_grad():
            target = R[i] + cfg.rlif_gamma * (1 - D[i]) * v(S2[i]).squeeze(1)
        loss_q = sum(((q_of(q, S[i], A[i]) - target) ** 2).mean() for q in qs)
        opt_q.zero_grad()
        loss_q.backward()
        opt_q.step()
        with torch.no_grad():
            for p, pt in zip(qs.parameters(), q_targ.parameters()):
                pt.mul_(0.995).add_(0.005 * p)
    with torch.no_grad():
        adv = torch.min(q_of(qs[0], S, A), q_of(qs[1], S, A)) - v(S).squeeze(1)
        w = torch.exp(cfg.rlif_awr_beta * adv).clamp(max=100.0).numpy()
    return _refit(initial, s, a, w, cfg, seed)


BASELINES = {
    "bc-intervention": train_bc_intervention,
    "hg-dagger": train_hg_dagger,
    "iwr": train_iwr,
    "sirius": train_sirius,
    "rlif": train_rlif,
}
