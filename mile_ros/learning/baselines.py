"""Baselines, each from its paper's rule, on the robot trainer's networks and training loop.

Data: `episodes` is every episode collected so far by this method (all iterations), each a
dict {"state": [T,S], "a_r", "a_h" (NaN / -1 where nu=0), "nu": bool[T], "executed": the
action applied}; `demos` are expert demonstrations {"state", "action"} -- none in the paper's
Figs. 3-4 (every method learns from interventions alone), N of them in its Fig. 5 ablation
(`mile-ros bench --demos N`).

Every weighted-BC baseline (BC-int, HG-DAgger, IWR, Sirius, and RLIF's policy extraction) is
`mile_ros.learning.train_bc` -- the loop, budget and early stopping of the robot's trainer --
started, at every iteration, from the initial policy and fitted on the aggregated data set with
its per-tick weights (minibatches drawn in proportion to the weight).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mile_ros.learning import MileConfig, MileModel, stack_frames, train_bc


@dataclass
class BaselineConfig:
    sirius_window: int = 5             # ticks before an intervention that Sirius discards
    rlif_gamma: float = 0.95
    rlif_expectile: float = 0.7
    rlif_awr_beta: float = 3.0
    rlif_steps: int = 1500
    rlif_hidden: tuple = (128, 128)


def _demo_episodes(demos) -> list[dict]:
    """Demonstrations as episodes: the expert's action as a_r, no intervention."""
    return [{"state": d["state"], "a_r": d["action"], "nu": np.zeros(len(d["state"]), bool),
             "executed": d["action"]} for d in demos]


def _with_weight(ep: dict, weight) -> dict:
    return {"state": ep["state"], "a_r": ep["executed"], "nu": np.zeros(len(ep["state"]), bool),
            "weight": np.asarray(weight, dtype=np.float64)}


def _refit(initial: MileModel, eps: list[dict], training: MileConfig) -> MileModel:
    """Weighted BC of the episodes' executed actions, from the initial policy."""
    eps = [e for e in eps if np.asarray(e.get("weight", 1.0)).sum() > 0]
    if not eps:
        return initial
    return train_bc(eps, initial.obs_spec, initial.action_spec, training, target="a_r",
                    init=initial, progress=False, sampling="weight")


def train_bc_intervention(initial, episodes, demos, cfg: BaselineConfig, training: MileConfig):
    """BC on intervention ticks only.

    Behaviour cloning of the person's action a_h on the ticks where the person took over (nu=1),
    aggregated over all iterations; the robot's own ticks and any demonstrations are not used.
    Fine-tunes the initial policy.
    """
    return _refit(initial, [_with_weight(e, e["nu"]) for e in episodes], training)


def train_hg_dagger(initial, episodes, demos, cfg: BaselineConfig, training: MileConfig):
    """HG-DAgger (Kelly et al., 2019).

    The expert gates control; only the states where the expert took over are labelled (with the
    expert's action) and aggregated with the demonstration set D0 (empty in Figs. 3-4); the
    policy is re-trained by BC on the aggregate D0 u D_int each iteration.
    """
    eps = [_with_weight(d, np.ones(len(d["state"]))) for d in _demo_episodes(demos)]
    return _refit(initial, eps + [_with_weight(e, e["nu"]) for e in episodes], training)


def train_iwr(initial, episodes, demos, cfg: BaselineConfig, training: MileConfig):
    """IWR, intervention-weighted regression (Mandlekar et al., 2020).

    BC on every executed tick (robot ticks labelled with the robot's action, intervention ticks
    with the person's) plus the demonstrations, re-weighted so that intervention ticks and
    non-intervention ticks each carry half of the total weight -- the scarce interventions count
    as much as everything else.
    """
    eps = _demo_episodes(demos) + list(episodes)
    is_int = [np.asarray(e["nu"], bool) for e in eps]
    n_int = sum(int(m.sum()) for m in is_int)
    n_rest = sum(int((~m).sum()) for m in is_int)
    if n_int == 0:
        return _refit(initial, [_with_weight(e, np.ones(len(m))) for e, m in zip(eps, is_int)],
                      training)
    return _refit(initial, [_with_weight(e, np.where(m, 0.5 / n_int, 0.5 / max(n_rest, 1)))
                            for e, m in zip(eps, is_int)], training)


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


def train_sirius(initial, episodes, demos, cfg: BaselineConfig, training: MileConfig):
    """Sirius (Liu et al., 2022): weighted BC over all deployment data with four classes.

    Demonstrations and autonomous robot ticks weight 1, the robot ticks in a short window before
    each intervention (the behaviour that made the person intervene) weight 0, and intervention
    ticks up-weighted so that the intervention class carries as much weight as all others.
    (Sirius's memory management only matters for data larger than here and is omitted.)
    """
    demo_eps = _demo_episodes(demos)
    eps = demo_eps + list(episodes)
    w = sirius_weights([np.asarray(e["nu"], bool) for e in episodes], cfg.sirius_window,
                       sum(len(d["state"]) for d in demo_eps))
    cuts = np.cumsum([len(e["state"]) for e in eps])[:-1]
    return _refit(initial, [_with_weight(e, we) for e, we in zip(eps, np.split(w, cuts))],
                  training)


def _mlp(i, o, hidden):
    layers, d = [], i
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    return nn.Sequential(*layers, nn.Linear(d, o))


def rlif_rewards(nu: np.ndarray) -> np.ndarray:
    """RLIF's reward: -1 on the robot's transition that provoked a takeover, 0 elsewhere.

    A takeover starting at tick t (nu[t-1]=0, nu[t]=1) penalises the transition of tick t-1,
    whose action was the robot's; the onset tick's own action is the person's and is not
    penalised. A takeover from an episode's first tick has no robot transition before it.
    """
    nu = np.asarray(nu, bool)
    r = np.zeros(len(nu), np.float32)
    onsets = np.flatnonzero(nu & ~np.r_[True, nu[:-1]])
    r[onsets - 1] = -1.0
    return r


def rlif_transitions(episodes, demos, k: int):
    """(s, a, r, s', done) over demos and collected episodes (the executed actions)."""
    S, A, R, S2, D = [], [], [], [], []
    for e in _demo_episodes(demos) + list(episodes):
        st = stack_frames(e["state"], k)
        T = len(st)
        S.append(st), A.append(np.asarray(e["executed"])), R.append(rlif_rewards(e["nu"]))
        S2.append(np.r_[st[1:], st[-1:]])
        d = np.zeros(T, np.float32)
        d[-1] = 1.0
        D.append(d)
    return [np.concatenate(x) for x in (S, A, R, S2, D)]


def train_rlif(initial, episodes, demos, cfg: BaselineConfig, training: MileConfig):
    """RLIF (Luo et al., 2023): off-policy RL whose only reward is the intervention itself.

    The reward is -1 on the robot transition before each takeover (`rlif_rewards`), 0
    elsewhere; all executed transitions (robot and person) plus any demonstrations form the
    replay data, and no task reward is used. Kept small and CPU-cheap with implicit Q-learning
    (twin Q, expectile V, discount 0.95) and advantage-weighted extraction of the policy
    (weighted BC from the initial policy).
    """
    torch.manual_seed(training.seed)
    k = initial.obs_spec.frame_stack
    s, a, r, s2, d = rlif_transitions(episodes, demos, k)
    S = torch.from_numpy(initial.normalizer(s))
    S2 = torch.from_numpy(initial.normalizer(s2))
    R, D = torch.as_tensor(r), torch.as_tensor(d)
    discrete = not initial.action_spec.continuous
    A = torch.as_tensor(a, dtype=torch.int64 if discrete else torch.float32)
    q_in, q_out = (S.shape[1], initial.action_spec.n) if discrete else (S.shape[1] + A.shape[1], 1)
    qs = nn.ModuleList([_mlp(q_in, q_out, cfg.rlif_hidden) for _ in range(2)])
    v = _mlp(S.shape[1], 1, cfg.rlif_hidden)
    _fit_iql(qs, v, (S, A, R, S2, D), cfg, discrete, training.seed)
    with torch.no_grad():
        adv = torch.min(_q_of(qs[0], S, A, discrete), _q_of(qs[1], S, A, discrete)) \
            - v(S).squeeze(1)
        w = torch.exp(cfg.rlif_awr_beta * adv).clamp(max=100.0).numpy()
    eps = _demo_episodes(demos) + list(episodes)
    cuts = np.cumsum([len(e["state"]) for e in eps])[:-1]
    return _refit(initial, [_with_weight(e, we) for e, we in zip(eps, np.split(w, cuts))],
                  training)


def _q_of(net, s_, a_, discrete):
    return (net(s_).gather(1, a_.view(-1, 1)).squeeze(1) if discrete
            else net(torch.cat([s_, a_], 1)).squeeze(1))


def _fit_iql(qs, v, data, cfg: BaselineConfig, discrete: bool, seed: int) -> None:
    """Implicit Q-learning: expectile V, twin Q towards r + gamma V(s'), Polyak targets."""
    S, A, R, S2, D = data
    q_targ = copy.deepcopy(qs)
    opt_q = torch.optim.Adam(qs.parameters(), lr=3e-4)
    opt_v = torch.optim.Adam(v.parameters(), lr=3e-4)
    g = torch.Generator().manual_seed(seed)
    n = len(S)
    for _ in range(cfg.rlif_steps):
        i = torch.randint(n, (min(256, n),), generator=g)
        with torch.no_grad():
            qt = torch.min(_q_of(q_targ[0], S[i], A[i], discrete),
                           _q_of(q_targ[1], S[i], A[i], discrete))
        diff = qt - v(S[i]).squeeze(1)
        wexp = torch.where(diff > 0, cfg.rlif_expectile, 1 - cfg.rlif_expectile)
        opt_v.zero_grad()
        (wexp * diff ** 2).mean().backward()
        opt_v.step()
        with torch.no_grad():
            target = R[i] + cfg.rlif_gamma * (1 - D[i]) * v(S2[i]).squeeze(1)
        loss_q = sum(((_q_of(q, S[i], A[i], discrete) - target) ** 2).mean() for q in qs)
        opt_q.zero_grad()
        loss_q.backward()
        opt_q.step()
        with torch.no_grad():
            for p, pt in zip(qs.parameters(), q_targ.parameters()):
                pt.mul_(0.995).add_(0.005 * p)


BASELINES = {
    "bc-intervention": train_bc_intervention,
    "hg-dagger": train_hg_dagger,
    "iwr": train_iwr,
    "sirius": train_sirius,
    "rlif": train_rlif,
}
