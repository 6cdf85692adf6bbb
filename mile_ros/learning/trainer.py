"""Fit MILE (policy pi and mental model pihat, jointly) or plain behaviour cloning from
recorded episodes. ROS-free; works in a notebook.

Episode arrays (one dict per episode, T ticks):
    "state": float[T, S]   "a_r": float[T, A] | int[T]   "a_h": same, NaN (or -1) where nu=0
    "nu": bool[T]          optional "image": uint8[T, H, W, 3], optional "weight": float[T] (BC)

Choices (see the module docstring of `mile_ros.learning.mile` for the math):
  * Frame stacking: current state first, then the k-1 previous ones (start padded with the first
    frame). Normalisation: per-dimension mean/std of the raw state, stored with the model.
  * Update budget scales with data size: clip(epochs * N / batch_size, min_updates, max_updates)
    gradient updates, so a few hundred ticks get many passes and a big data set a few.
  * Early stopping without losing data: contiguous blocks of `holdout_block` ticks (a `holdout`
    fraction of them) are held out only to choose the number of updates; the networks are then
    refit on ALL ticks from the same starting point for that many updates (scaled by the data
    ratio). No intervention tick is thrown away.
  * c=None: c starts at the rate-matching root (mean p(nu=1|s) over the data = observed
    intervention rate) and is then learned with the networks (c_update="learn", the default,
    own learning rate c_lr); "rate" re-solves the root at every evaluation instead, "fixed"
    keeps the first root. Measured on simulated-person data (3 worlds x {600, 2000} ticks):
    learn and rate are on par (mean |p - p_true| 0.081/0.051 vs 0.076/0.057, policy error
    0.081/0.050 vs 0.084/0.054), both clearly better than fixed (0.140/0.106); learn is faster
    and is the default. A slow c_lr (3e-3) was worse (0.118/0.081).
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
import dataclasses
import math
import random
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mile_ros.learning import mile
from mile_ros.learning.networks import LOG_STD_BOUNDS, CategoricalPolicy, GaussianPolicy

__all__ = ["ObsSpec", "ActionSpec", "Normalizer", "MileConfig", "MileModel", "PolicyRunner",
           "stack_frames", "train_mile", "train_bc", "seed_everything", "prepare_episodes"]

_ACTION_TOL = 1e-3


# ----------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class ObsSpec:
    """Observation layout: named state dimensions, frame stack depth, optional camera image."""
    state_names: tuple
    frame_stack: int = 4
    image_shape: tuple | None = None

    def __post_init__(self):
        names = tuple(str(n) for n in self.state_names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"state_names must be non-empty and unique, got {list(names)}")
        object.__setattr__(self, "state_names", names)
        if int(self.frame_stack) < 1:
            raise ValueError(f"frame_stack must be >= 1, got {self.frame_stack}")
        object.__setattr__(self, "frame_stack", int(self.frame_stack))
        if self.image_shape is not None:
            shape = tuple(int(v) for v in self.image_shape)
            if len(shape) != 3 or shape[2] != 3:
                raise ValueError(f"image_shape must be (H, W, 3), got {self.image_shape}")
            object.__setattr__(self, "image_shape", shape)

    @property
    def state_dim(self) -> int:
        return len(self.state_names)

    @property
    def stacked_dim(self) -> int:
        return self.state_dim * self.frame_stack

    def to_dict(self) -> dict:
        return {"state_names": list(self.state_names), "frame_stack": self.frame_stack,
                "image_shape": None if self.image_shape is None else list(self.image_shape)}

    @classmethod
    def from_dict(cls, d: dict) -> "ObsSpec":
        return cls(d["state_names"], d.get("frame_stack", 4), d.get("image_shape"))


@dataclass(frozen=True)
class ActionSpec:
    """Actions: kind "continuous" (one name per dimension, values in [-1, 1]) or "discrete"
    (n classes; names: one label for the action variable or one per class)."""
    names: tuple
    kind: str = "continuous"
    n: int | None = None

    def __post_init__(self):
        names = tuple(str(n) for n in self.names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"action names must be non-empty and unique, got {list(names)}")
        object.__setattr__(self, "names", names)
        if self.kind not in ("continuous", "discrete"):
            raise ValueError(f"action kind must be 'continuous' or 'discrete', got {self.kind!r}")
        if self.kind == "discrete":
            if self.n is None or int(self.n) < 2:
                raise ValueError(f"a discrete ActionSpec needs n >= 2 classes, got n={self.n}")
            if len(names) not in (1, int(self.n)):
                raise ValueError(f"discrete action names must be 1 label or {self.n}, got {len(names)}")
            object.__setattr__(self, "n", int(self.n))
        elif self.n not in (None, len(names)):
            raise ValueError(f"continuous action n must be None or len(names)={len(names)}, got {self.n}")
        else:
            object.__setattr__(self, "n", None)

    @property
    def continuous(self) -> bool:
        return self.kind == "continuous"

    @property
    def dim(self) -> int:
        return len(self.names) if self.continuous else 1

    def to_dict(self) -> dict:
        return {"names": list(self.names), "kind": self.kind, "n": self.n}

    @classmethod
    def from_dict(cls, d: dict) -> "ActionSpec":
        return cls(d["names"], d.get("kind", "continuous"), d.get("n"))


@dataclass
class Normalizer:
    """Per-dimension (x - mean) / std of the raw state, applied to every stacked frame."""
    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self):
        self.mean = np.asarray(self.mean, dtype=np.float64).reshape(-1)
        self.std = np.asarray(self.std, dtype=np.float64).reshape(-1)
        if self.mean.shape != self.std.shape or not (np.isfinite(self.mean).all()
                                                     and np.isfinite(self.std).all()
                                                     and (self.std > 0).all()):
            raise ValueError("normalizer needs finite mean and positive std of equal length")

    @classmethod
    def fit(cls, states: np.ndarray) -> "Normalizer":
        states = np.asarray(states, dtype=np.float64)
        std = states.std(0)
        return cls(states.mean(0), np.where(std > 1e-6, std, 1.0))

    def __call__(self, stacked: np.ndarray) -> np.ndarray:
        k = stacked.shape[-1] // self.mean.shape[0]
        return ((stacked - np.tile(self.mean, k)) / np.tile(self.std, k)).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        return cls(d["mean"], d["std"])


@dataclass
class MileConfig:
    c: float | None = None          # intervention cost; None = estimate from the data
    c_update: str = "learn"         # with c=None: "learn" | "rate" | "fixed" (see module doc)
    beta: float = 1.0               # probit scale
    lam: float = 0.5                # Eq. 5 weight of the BCE term
    form: str | None = None         # continuous "eq5"|"joint", discrete "eq3"|"joint"; None = eq5/eq3
    hidden: tuple = (256, 256)
    lr: float = 3e-4
    c_lr: float = 3e-2
    batch_size: int = 256
    epochs: float = 30.0            # nominal passes over the data (bounded by the two below)
    min_updates: int = 500
    max_updates: int = 20000
    eval_every: int | None = None   # updates between validations; None = budget // 40
    patience: int = 8               # evaluations without improvement before stopping
    holdout: float = 0.2            # fraction of tick blocks used only to pick the update count
    holdout_block: int = 25         # ticks per held-out block
    refit: bool = True              # refit on all data (True) or keep the best held-out weights
    train_mental: bool = True
    mental_anchor: float = 0.1      # weight of a BC term tying pihat to the robot's a_r (0 = paper)
    pretrain_updates: int = 300     # BC on a_r for both networks when there is no `init`
    grad_clip: float = 10.0
    weight_decay: float = 0.0
    log_std_bounds: tuple = LOG_STD_BOUNDS
    seed: int = 0

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        self.log_std_bounds = tuple(float(v) for v in self.log_std_bounds)

    def validate(self, action_spec: ActionSpec | None = None) -> "MileConfig":
        def bad(name, why):
            raise ValueError(f"MileConfig.{name} {why}, got {getattr(self, name)!r}")
        if self.c is not None and not (isinstance(self.c, (int, float)) and math.isfinite(self.c)):
            bad("c", "must be a finite number or None")
        if self.c_update not in ("learn", "rate", "fixed"):
            bad("c_update", "must be 'learn', 'rate' or 'fixed'")
        if not (math.isfinite(self.beta) and self.beta > 0):
            bad("beta", "must be > 0")
        if not 0.0 <= self.lam <= 1.0:
            bad("lam", "must be in [0, 1]")
        allowed = (None, "eq5", "joint") if action_spec is None or action_spec.continuous \
            else (None, "eq3", "joint")
        if self.form not in allowed:
            bad("form", f"must be one of {allowed}")
        for name in ("lr", "c_lr", "epochs", "grad_clip"):
            if not getattr(self, name) > 0:
                bad(name, "must be > 0")
        for name in ("batch_size", "min_updates", "max_updates", "patience", "holdout_block"):
            if int(getattr(self, name)) < 1:
                bad(name, "must be >= 1")
        if self.min_updates > self.max_updates:
            bad("min_updates", "must be <= max_updates")
        if self.eval_every is not None and int(self.eval_every) < 1:
            bad("eval_every", "must be >= 1 or None")
        if not 0.0 <= self.holdout < 0.9:
            bad("holdout", "must be in [0, 0.9)")
        for name in ("pretrain_updates", "weight_decay", "mental_anchor"):
            if not getattr(self, name) >= 0:
                bad(name, "must be >= 0")
        return self

    def resolved_form(self, action_spec: ActionSpec) -> str:
        return self.form or ("eq5" if action_spec.continuous else "eq3")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"], d["log_std_bounds"] = list(self.hidden), list(self.log_std_bounds)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MileConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def stack_frames(states, k: int = 4) -> np.ndarray:
    """[T, S] -> [T, k*S]: row t is (s_t, s_{t-1}, ..., s_{t-k+1}), padded with s_0."""
    states = np.asarray(states)
    if states.ndim != 2 or states.shape[0] == 0:
        raise ValueError(f"states must have shape [T, S] with T >= 1, got {states.shape}")
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    t = np.arange(states.shape[0])
    return np.concatenate([states[np.maximum(t - j, 0)] for j in range(int(k))], axis=1)


# ----------------------------------------------------------------------------- model
class MileModel:
    """A trained policy (and mental model) with everything needed to run it."""

    def __init__(self, policy: nn.Module, mental: nn.Module, obs_spec: ObsSpec,
                 action_spec: ActionSpec, normalizer: Normalizer, c: float | None = None,
                 beta: float = 1.0, config: MileConfig | None = None):
        self.policy, self.mental = policy.eval(), mental.eval()
        self.obs_spec, self.action_spec, self.normalizer = obs_spec, action_spec, normalizer
        self.c = None if c is None else float(c)
        self.beta = float(beta)
        self.config = config or MileConfig()
        self.metrics: dict = {}

    # inputs: stacked state [k*S] or [B, k*S], or {"state": ..., "image": uint8 [(B,) H, W, 3]}
    def _obs(self, stacked_obs):
        image = None
        if isinstance(stacked_obs, dict):
            state, image = stacked_obs.get("state"), stacked_obs.get("image")
        else:
            state = stacked_obs
        state = np.asarray(state, dtype=np.float64)
        single = state.ndim == 1
        state = state.reshape(1, -1) if single else state
        if state.ndim != 2 or state.shape[1] != self.obs_spec.stacked_dim:
            raise ValueError(f"stacked_obs must have {self.obs_spec.stacked_dim} values per row "
                             f"({self.obs_spec.frame_stack} frames x {self.obs_spec.state_dim}), "
                             f"got shape {np.shape(state)}")
        if not np.isfinite(state).all():
            raise ValueError("stacked_obs contains NaN or inf")
        obs = torch.from_numpy(self.normalizer(state))
        if self.obs_spec.image_shape is not None:
            if image is None:
                raise ValueError("this model needs an image: pass {'state': ..., 'image': ...}")
            image = np.asarray(image, dtype=np.uint8)
            image = image[None] if image.ndim == 3 else image
            obs = {"state": obs, "image": torch.from_numpy(np.ascontiguousarray(image))}
        return obs, single

    def action_distribution(self, stacked_obs):
        """(mu, log_std) arrays for continuous actions, logits for discrete."""
        obs, single = self._obs(stacked_obs)
        with torch.no_grad():
            out = self.policy(obs)
        pick = (lambda x: x[0].numpy()) if single else (lambda x: x.numpy())
        return tuple(pick(x) for x in out) if isinstance(out, tuple) else pick(out)

    def act(self, stacked_obs, deterministic: bool = True, rng: np.random.Generator | None = None):
        """Action(s): continuous float in [-1, 1] (mean, or a clipped sample), discrete int."""
        dist = self.action_distribution(stacked_obs)
        rng = rng if rng is not None else np.random.default_rng()
        if self.action_spec.continuous:
            mu, log_std = dist
            a = mu if deterministic else mu + np.exp(log_std) * rng.standard_normal(mu.shape)
            return np.clip(a, -1.0, 1.0).astype(np.float64)
        logits = np.asarray(dist, dtype=np.float64)
        if deterministic:
            return logits.argmax(-1)
        g = -np.log(-np.log(rng.uniform(1e-12, 1.0, logits.shape)))
        return (logits + g).argmax(-1)

    def intervention_probability(self, stacked_obs) -> np.ndarray:
        """Predicted p(nu=1|s) per row (needs c)."""
        if self.c is None:
            raise ValueError("this model has no intervention cost c (a BC model); set model.c")
        obs, _ = self._obs(stacked_obs)
        with torch.no_grad():
            return _probability(self.policy, self.mental, obs, self.c, self.beta,
                                self.action_spec).numpy().reshape(-1)

    def runner(self) -> "PolicyRunner":
        return PolicyRunner(self)


class PolicyRunner:
    """Runs a model tick by tick, keeping the frame history: reset(), then step(state)."""

    def __init__(self, model: MileModel):
        self.model = model
        self._frames: deque = deque(maxlen=model.obs_spec.frame_stack)

    def reset(self) -> None:
        self._frames.clear()

    def stacked(self, state) -> np.ndarray:
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        if state.shape[0] != self.model.obs_spec.state_dim:
            raise ValueError(f"state must have {self.model.obs_spec.state_dim} values "
                             f"({', '.join(self.model.obs_spec.state_names)}), got {state.shape[0]}")
        if not self._frames:
            self._frames.extend([state] * self._frames.maxlen)
        else:
            self._frames.appendleft(state)
        return np.concatenate(list(self._frames))

    def step(self, state, image=None, deterministic: bool = True):
        stacked = self.stacked(state)
        obs = stacked if image is None else {"state": stacked, "image": image}
        return self.model.act(obs, deterministic=deterministic)


def _probability(policy, mental, obs, c, beta, action_spec) -> torch.Tensor:
    if action_spec.continuous:
        mu, ls = policy(obs)
        muh, lsh = mental(obs)
        return mile.intervention_probability_gaussian(mu, ls, muh, lsh, c, beta)
    return mile.intervention_probability_discrete(policy(obs), mental(obs), c, beta)


def _make_network(obs_spec, action_spec, config) -> nn.Module:
    if action_spec.continuous:
        return GaussianPolicy(obs_spec.stacked_dim, action_spec.dim, config.hidden,
                              obs_spec.image_shape, config.log_std_bounds)
    return CategoricalPolicy(obs_spec.stacked_dim, action_spec.n, config.hidden, obs_spec.image_shape)


# ----------------------------------------------------------------------------- data
def prepare_episodes(episodes, obs_spec: ObsSpec, action_spec: ActionSpec) -> dict:
    """Validate episodes and concatenate them: stacked raw states, actions, nu, block ids."""
    if isinstance(episodes, dict):
        episodes = [episodes]
    if not isinstance(episodes, (list, tuple)) or not episodes:
        raise ValueError("episodes must be a non-empty list of episode dicts")
    out = {k: [] for k in ("stacked", "raw", "image", "a_r", "a_h", "nu", "weight", "episode", "tick")}
    for i, ep in enumerate(episodes):
        where = f"episodes[{i}]"
        if not isinstance(ep, dict) or "state" not in ep:
            raise ValueError(f"{where} must be a dict with at least 'state'")
        state = np.asarray(ep["state"], dtype=np.float64)
        if state.ndim != 2 or state.shape[1] != obs_spec.state_dim or state.shape[0] == 0:
            raise ValueError(f"{where}['state'] must have shape [T, {obs_spec.state_dim}], got {state.shape}")
        if not np.isfinite(state).all():
            raise ValueError(f"{where}['state'] contains NaN or inf")
        t = state.shape[0]
        nu = np.asarray(ep.get("nu", np.zeros(t, bool)))
        if nu.shape != (t,):
            raise ValueError(f"{where}['nu'] must have shape [{t}], got {nu.shape}")
        if nu.dtype != bool:
            if not np.isin(nu, (0, 1)).all():
                raise ValueError(f"{where}['nu'] must be boolean")
            nu = nu.astype(bool)
        acts = {}
        for key in ("a_r", "a_h"):
            acts[key] = _actions(ep.get(key), t, action_spec, f"{where}['{key}']")
        if not _finite_actions(acts["a_h"], action_spec)[nu].all():
            raise ValueError(f"{where}['a_h'] must be a valid action on every tick where nu is true")
        image = ep.get("image")
        if obs_spec.image_shape is not None:
            image = np.asarray(image if image is not None else [], dtype=np.uint8) \
                if image is not None else None
            if image is None or image.shape != (t,) + obs_spec.image_shape:
                raise ValueError(f"{where}['image'] must be uint8 of shape [{t}, "
                                 f"{', '.join(map(str, obs_spec.image_shape))}]")
            out["image"].append(image)
        weight = np.asarray(ep.get("weight", np.ones(t)), dtype=np.float64)
        if weight.shape != (t,) or not np.isfinite(weight).all() or (weight < 0).any():
            raise ValueError(f"{where}['weight'] must be [{t}] finite non-negative numbers")
        out["stacked"].append(stack_frames(state, obs_spec.frame_stack))
        out["raw"].append(state)
        out["a_r"].append(acts["a_r"])
        out["a_h"].append(acts["a_h"])
        out["nu"].append(nu)
        out["weight"].append(weight)
        out["episode"].append(np.full(t, i))
        out["tick"].append(np.arange(t))
    data = {k: np.concatenate(v) for k, v in out.items() if v}
    data.setdefault("image", None)
    return data


def _actions(a, t, action_spec, where):
    if a is None:
        return np.full((t, action_spec.dim), np.nan) if action_spec.continuous else np.full(t, -1)
    if action_spec.continuous:
        a = np.asarray(a, dtype=np.float64)
        if a.shape != (t, action_spec.dim):
            raise ValueError(f"{where} must have shape [{t}, {action_spec.dim}], got {a.shape}")
        if np.any(np.abs(a[np.isfinite(a)]) > 1 + _ACTION_TOL):
            raise ValueError(f"{where} has values outside the [-1, 1] action box")
        return np.clip(a, -1, 1)
    a = np.asarray(a)
    if a.shape != (t,):
        raise ValueError(f"{where} must have shape [{t}], got {a.shape}")
    if a.dtype.kind == "f":
        a = np.where(np.isfinite(a), a, -1)
        if (a != np.round(a)).any():
            raise ValueError(f"{where} must hold integer class indices")
    a = a.astype(np.int64)
    if ((a < -1) | (a >= action_spec.n)).any():
        raise ValueError(f"{where} must hold class indices in [0, {action_spec.n}) (-1 = none)")
    return a


def _finite_actions(a, action_spec):
    return np.isfinite(a).all(-1) if action_spec.continuous else a >= 0


class _Tensors:
    """The prepared data as tensors, with batching by index."""

    def __init__(self, data, normalizer, action_spec):
        self.obs = torch.from_numpy(normalizer(data["stacked"]))
        self.image = None if data["image"] is None else torch.from_numpy(data["image"])
        dtype = torch.float32 if action_spec.continuous else torch.long
        self.a_r = torch.from_numpy(data["a_r"]).to(dtype)
        self.a_h = torch.from_numpy(data["a_h"]).to(dtype)
        self.nu = torch.from_numpy(data["nu"])
        self.weight = torch.from_numpy(data["weight"]).to(torch.float32)
        self.has_a_r = torch.from_numpy(_finite_actions(data["a_r"], action_spec)).to(torch.float32)
        self.n = self.obs.shape[0]

    def obs_at(self, idx):
        if self.image is None:
            return self.obs[idx]
        return {"state": self.obs[idx], "image": self.image[idx]}


def _split(data, config, rng) -> tuple[np.ndarray, np.ndarray | None]:
    """Training/selection split by contiguous blocks of ticks within episodes."""
    n = data["nu"].shape[0]
    block = data["episode"] * (10**9) + data["tick"] // config.holdout_block
    blocks = np.unique(block)
    n_val = int(round(config.holdout * len(blocks)))
    if config.holdout == 0 or len(blocks) < 5 or n_val < 1 or n < 50:
        return np.arange(n), None
    val_blocks = rng.choice(blocks, size=n_val, replace=False)
    is_val = np.isin(block, val_blocks)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _budget(n_train, config) -> int:
    return int(np.clip(math.ceil(config.epochs * n_train / config.batch_size),
                       config.min_updates, config.max_updates))


# ----------------------------------------------------------------------------- training loop
class _Loop:
    """Adam over the given modules (and optional c), minibatches by index, periodic held-out
    evaluation with patience. Returns the history and the best update count."""

    def __init__(self, loss_fn, modules, config, gen, c_param=None):
        self.loss_fn, self.modules, self.config, self.gen = loss_fn, modules, config, gen
        groups = [{"params": [p for m in modules for p in m.parameters()], "lr": config.lr,
                   "weight_decay": config.weight_decay}]
        if c_param is not None:
            groups.append({"params": [c_param], "lr": config.c_lr, "weight_decay": 0.0})
        self.params = [p for g in groups for p in g["params"]]
        self.opt = torch.optim.Adam(groups)

    def _batches(self, idx):
        while True:
            perm = idx[torch.randperm(len(idx), generator=self.gen).numpy()]
            for s in range(0, len(perm), self.config.batch_size):
                chunk = perm[s:s + self.config.batch_size]
                if len(chunk) >= min(len(perm), 8):
                    yield torch.from_numpy(chunk)

    def evaluate(self, idx) -> float:
        for m in self.modules:
            m.eval()
        total = 0.0
        with torch.no_grad():
            for s in range(0, len(idx), 4096):
                chunk = torch.from_numpy(idx[s:s + 4096])
                total += float(self.loss_fn(chunk)[0]) * len(chunk)
        for m in self.modules:
            m.train()
        return total / len(idx)

    def run(self, train_idx, updates, val_idx=None, eval_every=None, on_eval=None,
            bar=None, snapshot=None):
        cfg = self.config
        best = (math.inf, 0, None)
        history, bad, last = [], 0, float("nan")
        batches = self._batches(train_idx)
        for m in self.modules:
            m.train()
        for u in range(1, updates + 1):
            loss, parts = self.loss_fn(next(batches))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            self.opt.step()
            last = parts["loss"] if "loss" in parts else float(loss.detach())
            if bar is not None:
                bar.update(1)
            if eval_every and (u % eval_every == 0 or u == updates):
                if on_eval is not None:
                    on_eval()
                entry = {"update": u, "train_loss": last}
                if val_idx is not None:
                    v = self.evaluate(val_idx)
                    entry["val_loss"] = v
                    if v < best[0] - 1e-6 * abs(best[0] if math.isfinite(best[0]) else 1):
                        best, bad = (v, u, snapshot() if snapshot else None), 0
                    else:
                        bad += 1
                history.append(entry)
                if bar is not None:
                    bar.set_postfix(loss=f"{last:.4f}", **({"val": f"{entry['val_loss']:.4f}"}
                                                          if "val_loss" in entry else {}))
                if val_idx is not None and bad >= cfg.patience:
                    break
        for m in self.modules:
            m.eval()
        return {"history": history, "best_val": best[0], "best_update": best[1] or updates,
                "best_state": best[2], "updates_run": u, "last_loss": last}


class _Cost:
    """The intervention cost during training: a learned 0-d parameter or a plain number."""

    def __init__(self, value: float, learn: bool):
        self.param = torch.nn.Parameter(torch.tensor(float(value), dtype=torch.float64)) \
            if learn else None
        self.value = float(value)

    def __call__(self):
        return self.param if self.param is not None else self.value

    def get(self) -> float:
        return float(self.param.detach()) if self.param is not None else self.value

    def set(self, value: float) -> None:
        if self.param is not None:
            with torch.no_grad():
                self.param.fill_(value)
        self.value = float(value)


def _state_of(modules, cost):
    return [copy.deepcopy(m.state_dict()) for m in modules], None if cost is None else cost.get()


def _load_state(modules, cost, state):
    for m, sd in zip(modules, state[0]):
        m.load_state_dict(sd)
    if cost is not None:
        cost.set(state[1])


def _select_and_fit(make_loss, modules, data, config, gen, rng, progress, desc,
                    cost=None, on_eval=None):
    """Pick the update count on held-out blocks, then refit on everything (see module doc)."""
    train_idx, val_idx = _split(data, config, rng)
    n_all = data["nu"].shape[0]
    budget = _budget(len(train_idx), config)
    eval_every = config.eval_every or max(1, budget // 40)
    c_param = None if cost is None else cost.param
    start = _state_of(modules, cost)
    loop = _Loop(make_loss, modules, config, gen, c_param)
    metrics = {"n_ticks": n_all, "budget_updates": budget, "eval_every": eval_every}
    with tqdm(total=budget, desc=desc, disable=not progress, leave=False) as bar:
        if val_idx is None:
            res = loop.run(np.arange(n_all), budget, None, eval_every, on_eval, bar)
            metrics.update(early_stopping="none (too little data to hold out)",
                           updates=res["updates_run"], history=res["history"])
            return metrics
        snap = (lambda: _state_of(modules, cost)) if not config.refit else None
        res = loop.run(train_idx, budget, val_idx, eval_every, on_eval, bar, snap)
        metrics.update(selected_updates=res["best_update"], best_val_loss=res["best_val"],
                       n_holdout=len(val_idx), history=res["history"])
        if not config.refit:
            _load_state(modules, cost, res["best_state"])
            metrics.update(early_stopping="best held-out weights (no refit)",
                           updates=res["best_update"])
            return metrics
        refit = max(eval_every, int(round(res["best_update"] * n_all / len(train_idx))))
        bar.reset(total=refit)
        bar.set_description(desc + " (refit on all)")
        _load_state(modules, cost, start)
        loop = _Loop(make_loss, modules, config, gen, c_param)
        res2 = loop.run(np.arange(n_all), refit, None, eval_every, on_eval, bar)
        metrics.update(early_stopping="holdout to choose updates, then refit on all data",
                       updates=refit, refit_history=res2["history"])
    return metrics


# ----------------------------------------------------------------------------- BC
def _bc_loss(net, tensors, target, action_spec, weight):
    def loss_fn(idx):
        obs = tensors.obs_at(idx)
        y, w = target[idx], weight[idx]
        if action_spec.continuous:
            mu, ls = net(obs)
            nll = -mile.gaussian_log_prob(mu, ls, y)
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
    valid = _finite_actions(y, action_spec) & (nu if target == "a_h" else True)
    if not valid.any():
        raise ValueError(f"no ticks with a valid {target} action to clone")
    return y, valid


def train_bc(episodes, obs_spec: ObsSpec, action_spec: ActionSpec,
             config: MileConfig | None = None, *, target: str = "a_r",
             init: MileModel | None = None, progress: bool = True) -> MileModel:
    """Behaviour cloning: fit the policy to `target` actions ("a_r" robot, "a_h" interventions
    only, "executed" = a_h where nu else a_r), weighted by an optional per-tick "weight".
    Accepts a list of episode dicts or one dict. The mental model of the result is a copy of
    the policy; c is None unless config.c is set. Metrics in `model.metrics`."""
    config = copy.deepcopy(config or MileConfig()).validate(action_spec)
    seed_everything(config.seed)
    t0 = time.perf_counter()
    data = prepare_episodes(episodes, obs_spec, action_spec)
    y, valid = _bc_targets(data, target, action_spec)
    data = {k: (v[valid] if isinstance(v, np.ndarray) else v) for k, v in data.items()}
    data["a_r"] = y[valid]
    if init is not None:
        _check_compatible(init, obs_spec, action_spec)
    normalizer = init.normalizer if init is not None else Normalizer.fit(data["raw"])
    net = copy.deepcopy(init.policy) if init is not None else _make_network(obs_spec, action_spec, config)
    tensors = _Tensors(data, normalizer, action_spec)
    gen = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    loss_fn = _bc_loss(net, tensors, tensors.a_r, action_spec, tensors.weight)
    metrics = _select_and_fit(loss_fn, [net], data, config, gen, rng, progress, f"BC ({target})")
    metrics.update(time_s=time.perf_counter() - t0, target=target)
    model = MileModel(net, copy.deepcopy(net), obs_spec, action_spec, normalizer,
                      config.c, config.beta, config)
    model.metrics = metrics
    return model


# ----------------------------------------------------------------------------- MILE
def _check_compatible(init: MileModel, obs_spec: ObsSpec, action_spec: ActionSpec) -> None:
    if not isinstance(init, MileModel):
        raise ValueError(f"init must be a MileModel or None, got {type(init).__name__}")
    if init.obs_spec != obs_spec:
        raise ValueError(f"init was trained on observations {init.obs_spec}, not {obs_spec}")
    if init.action_spec != action_spec:
        raise ValueError(f"init was trained on actions {init.action_spec}, not {action_spec}")


def _mile_loss(policy, mental, tensors, c, config, action_spec, form):
    def loss_fn(idx):
        obs = tensors.obs_at(idx)
        if config.train_mental:
            m_out = mental(obs)
        else:
            with torch.no_grad():
                m_out = mental(obs)
        if action_spec.continuous:
            mu, ls = policy(obs)
            loss, parts = mile.gaussian_mile_loss(mu, ls, m_out[0], m_out[1], tensors.a_h[idx],
                                                  tensors.nu[idx], c(), config.beta, config.lam, form)
        else:
            loss, parts = mile.discrete_mile_loss(policy(obs), m_out, tensors.a_h[idx],
                                                  tensors.nu[idx], c(), config.beta, form)
        if config.mental_anchor > 0 and config.train_mental and bool(tensors.has_a_r.any()):
            # the person's mental model is a belief about the robot, whose actions a_r we see
            a_r, ok = tensors.a_r[idx], tensors.has_a_r[idx]
            if action_spec.continuous:
                nll = -mile.gaussian_log_prob(m_out[0], m_out[1], torch.nan_to_num(a_r))
            else:
                nll = nn.functional.cross_entropy(m_out, a_r.clamp(min=0), reduction="none")
            anchor = (nll * ok).sum() / ok.sum().clamp(min=1)
            loss = loss + config.mental_anchor * anchor
            parts = dict(parts, loss=float(loss.detach()), mental_anchor=float(anchor.detach()))
        return loss, parts
    return loss_fn


def _mean_probability(policy, mental, tensors, c, beta, action_spec) -> np.ndarray:
    ps = []
    with torch.no_grad():
        for s in range(0, tensors.n, 4096):
            idx = torch.arange(s, min(s + 4096, tensors.n))
            ps.append(_probability(policy, mental, tensors.obs_at(idx), c, beta, action_spec))
    return torch.cat(ps).double().numpy()


def _rate_c(policy, mental, tensors, rate, beta, action_spec, c_hint=None) -> float:
    """c such that the mean predicted p(nu=1|s) over all ticks equals `rate`."""
    with torch.no_grad():
        outs = [policy(tensors.obs_at(torch.arange(tensors.n))),
                mental(tensors.obs_at(torch.arange(tensors.n)))]
    if action_spec.continuous:
        (mu, ls), (muh, lsh) = outs
        return mile.estimate_c(rate, mu=mu, log_std=ls, mu_hat=muh, log_std_hat=lsh, beta=beta,
                               c_hint=c_hint, tol=1e-6)
    return mile.estimate_c(rate, policy_logits=outs[0], mental_logits=outs[1], beta=beta,
                           c_hint=c_hint, tol=1e-6)


def train_mile(episodes, obs_spec: ObsSpec, action_spec: ActionSpec,
               config: MileConfig | None = None, init: MileModel | None = None,
               progress: bool = True) -> tuple[MileModel, dict]:
    """Fit pi and pihat jointly with the MILE loss -> (MileModel, metrics)."""
    config = copy.deepcopy(config or MileConfig()).validate(action_spec)
    seed_everything(config.seed)
    t0 = time.perf_counter()
    form = config.resolved_form(action_spec)
    data = prepare_episodes(episodes, obs_spec, action_spec)
    n, n_int = data["nu"].shape[0], int(data["nu"].sum())
    metrics = {"n_interventions": n_int, "rate_observed": n_int / n, "form": form}

    if init is not None:
        _check_compatible(init, obs_spec, action_spec)
        normalizer = init.normalizer
        policy, mental = copy.deepcopy(init.policy), copy.deepcopy(init.mental)
        metrics["warm_start"] = "init (policy and mental model)"
    else:
        normalizer = Normalizer.fit(data["raw"])
        policy = _make_network(obs_spec, action_spec, config)
        metrics["warm_start"] = "none"
        has_ar = _finite_actions(data["a_r"], action_spec)
        if config.pretrain_updates > 0 and has_ar.any():
            tensors = _Tensors(data, normalizer, action_spec)
            bc_idx = np.flatnonzero(has_ar)
            gen = torch.Generator().manual_seed(config.seed + 1)
            loop = _Loop(_bc_loss(policy, tensors, tensors.a_r, action_spec,
                                  torch.ones(tensors.n)), [policy], config, gen)
            loop.run(bc_idx, config.pretrain_updates)
            metrics["warm_start"] = f"BC on a_r ({config.pretrain_updates} updates), both networks"
        mental = copy.deepcopy(policy)
    tensors = _Tensors(data, normalizer, action_spec)

    # c: given, warm-started, or the rate-matching root; then learned / re-matched / fixed
    rate_smoothed = (n_int + 0.5) / (n + 1.0)
    if config.c is not None:
        c0, mode = float(config.c), "given (fixed)"
    else:
        c0 = _rate_c(policy, mental, tensors, rate_smoothed, config.beta, action_spec)
        mode = {"learn": "rate-matched, then learned", "rate": "rate-matched at every evaluation",
                "fixed": "rate-matched once"}[config.c_update]
    cost = _Cost(c0, learn=config.c is None and config.c_update == "learn")
    on_eval = None
    if config.c is None and config.c_update == "rate":
        def on_eval():
            cost.set(_rate_c(policy, mental, tensors, rate_smoothed, config.beta, action_spec,
                             c_hint=cost.get()))

    modules = [policy, mental] if config.train_mental else [policy]
    gen = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    loss_fn = _mile_loss(policy, mental, tensors, cost, config, action_spec, form)
    fit_metrics = _select_and_fit(loss_fn, modules, data, config, gen, rng, progress, "MILE",
                                  cost, on_eval)
    c_final = cost.get()
    p = _mean_probability(policy, mental, tensors, c_final, config.beta, action_spec)
    metrics.update(fit_metrics)
    metrics.update(c=c_final, c_initial=c0, c_mode=mode, beta=config.beta,
                   rate_predicted=float(p.mean()), time_s=time.perf_counter() - t0)
    model = MileModel(policy, mental, obs_spec, action_spec, normalizer, c_final, config.beta,
                      config)
    model.metrics = metrics
    return model, metrics
