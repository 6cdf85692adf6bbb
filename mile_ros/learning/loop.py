"""The generic training loop shared by MILE and BC.

Episode arrays to tensors, seeding, the update budget, early stopping on held-out blocks and the
refit on all data.

  * Update budget scales with data size: clip(epochs * N / batch_size, min_updates, max_updates)
    gradient updates, so a few hundred ticks get many passes and a big data set a few.
  * `ema` > 0: the fit ends with an exponential moving average of the networks' weights,
    w_ema <- w_ema + (1 - d_u) (w - w_ema) after update u, with d_u = min(ema, (1 + u) / (10 + u))
    (the usual warm-up, so the start's weights fade within tens of updates, not thousands). An
    average of the last ~1/(1 - ema) iterates is a flatter solution than the last one; with
    `holdout` the held-out evaluations score the live weights.
  * Early stopping without losing data: contiguous blocks of `holdout_block` ticks (a `holdout`
    fraction of them) are held out only to choose the number of updates; the networks are then
    refit on ALL ticks from the same starting point for that many updates (scaled by the data
    ratio). No intervention tick is thrown away.
"""
from __future__ import annotations

import copy
import math
import random

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mile_ros.learning.model import MileModel
from mile_ros.learning.networks import CategoricalPolicy, GaussianPolicy, image_input
from mile_ros.learning.specs import _ACTION_TOL, ActionSpec, ObsSpec, stack_frames


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device="cpu") -> torch.device:
    """Map "cpu", "cuda", "cuda:N" or "auto" (CUDA when torch has a GPU, else the CPU) to a device.

    Asking for CUDA where torch has none raises a ValueError that names the device.
    """
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}") \
            from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available to torch "
                             f"{torch.__version__} on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA "
                             "device(s) here")
    return dev


def _make_network(obs_spec, action_spec, config) -> nn.Module:
    if action_spec.continuous:
        return GaussianPolicy(obs_spec.stacked_dim, action_spec.dim, config.hidden,
                              obs_spec.image_shape, config.log_std_bounds, config.image_encoder)
    return CategoricalPolicy(obs_spec.stacked_dim, action_spec.n, config.hidden,
                             obs_spec.image_shape, config.image_encoder)


# ----------------------------------------------------------------------------- data
def prepare_episodes(episodes, obs_spec: ObsSpec, action_spec: ActionSpec) -> dict:
    """Validate episodes and concatenate them: stacked raw states, actions, nu, block ids."""
    if isinstance(episodes, dict):
        episodes = [episodes]
    if not isinstance(episodes, (list, tuple)) or not episodes:
        raise ValueError("episodes must be a non-empty list of episode dicts")
    out = {k: [] for k in ("stacked", "raw", "image", "a_r", "a_h", "nu", "weight", "episode",
                           "tick")}
    for i, ep in enumerate(episodes):
        where = f"episodes[{i}]"
        if not isinstance(ep, dict) or "state" not in ep:
            raise ValueError(f"{where} must be a dict with at least 'state'")
        state = np.asarray(ep["state"], dtype=np.float64)
        if state.ndim != 2 or state.shape[1] != obs_spec.state_dim or state.shape[0] == 0:
            raise ValueError(f"{where}['state'] must have shape [T, {obs_spec.state_dim}], "
                             f"got {state.shape}")
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
            raise ValueError(f"{where}['a_h'] must be a valid action on every tick "
                             "where nu is true")
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

    def __init__(self, data, normalizer, action_spec, device=None):
        self.device = torch.device(device or "cpu")

        def put(array, dtype=None):
            return torch.from_numpy(array).to(self.device, dtype)
        self.obs = put(normalizer(data["stacked"]))
        self.image = None if data["image"] is None else put(data["image"])
        dtype = torch.float32 if action_spec.continuous else torch.long
        self.a_r = put(data["a_r"], dtype)
        self.a_h = put(data["a_h"], dtype)
        self.nu = put(data["nu"])
        self.weight = put(data["weight"], torch.float32)
        self.has_a_r = put(_finite_actions(data["a_r"], action_spec), torch.float32)
        self.n = self.obs.shape[0]

    def index(self, idx) -> torch.Tensor:
        """Return the tick indices `idx` as a tensor on the data's device."""
        return torch.as_tensor(idx, device=self.device)

    def obs_at(self, idx):
        """Return the inputs of ticks `idx`, frames converted to float once for both networks."""
        idx = self.index(idx)
        if self.image is None:
            return self.obs[idx]
        return {"state": self.obs[idx], "image": image_input(self.image[idx])}


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
    """Adam over the given modules (and the probit's learned c, beta), minibatches by index.

    Periodic held-out evaluation with patience. Returns the history and the best update count.
    """

    def __init__(self, loss_fn, modules, config, gen, cost_params=(), sample_weight=None):
        self.loss_fn, self.modules, self.config, self.gen = loss_fn, modules, config, gen
        self.sample_weight = sample_weight   # per tick: batches drawn in proportion to it
        groups = [{"params": [p for m in modules for p in m.parameters()], "lr": config.lr,
                   "weight_decay": config.weight_decay}]
        if cost_params:
            groups.append({"params": list(cost_params), "lr": config.c_lr, "weight_decay": 0.0})
        self.params = [p for g in groups for p in g["params"]]
        self.opt = torch.optim.Adam(groups, **_fused(self.params))
        self.ema = _Ema(groups[0]["params"], config.ema) if config.ema else None

    def _batches(self, idx):
        if self.sample_weight is not None:
            yield from self._weighted_batches(idx)
        while True:
            perm = idx[torch.randperm(len(idx), generator=self.gen).numpy()]
            for s in range(0, len(perm), self.config.batch_size):
                chunk = perm[s:s + self.config.batch_size]
                if len(chunk) >= min(len(perm), 8):
                    yield torch.from_numpy(chunk)

    def _weighted_batches(self, idx):
        """Minibatches drawn with probability proportional to the tick's weight.

        The loss of such a batch is then its plain mean (`presampled=True`): an unbiased,
        lower-variance form of the weighted loss when a few ticks carry much of the weight.
        """
        w = torch.as_tensor(np.asarray(self.sample_weight)[idx], dtype=torch.float64)
        size = min(self.config.batch_size, max(len(idx), 32))
        while True:
            pick = torch.multinomial(w, size, replacement=True, generator=self.gen)
            yield torch.from_numpy(idx[pick.numpy()])

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
        kw = {"presampled": True} if self.sample_weight is not None else {}
        for u in range(1, updates + 1):
            loss, parts = self.loss_fn(next(batches), **kw)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.params, cfg.grad_clip, foreach=True)
            self.opt.step()
            if self.ema is not None:
                self.ema.update(u)
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
        if self.ema is not None:
            self.ema.apply()
        for m in self.modules:
            m.eval()
        return {"history": history, "best_val": best[0], "best_update": best[1] or updates,
                "best_state": best[2], "updates_run": u, "last_loss": last}


class _Ema:
    """Exponential moving average of parameters (module docstring); `apply` writes it back."""

    def __init__(self, params, decay: float):
        self.params, self.decay = list(params), float(decay)
        self.average = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self, u: int) -> None:
        d = min(self.decay, (1.0 + u) / (10.0 + u))
        torch._foreach_lerp_(self.average, [p.detach() for p in self.params], 1.0 - d)

    @torch.no_grad()
    def apply(self) -> None:
        for p, a in zip(self.params, self.average):
            p.copy_(a)


def _fused(params) -> dict:
    """Adam's `fused=True` where torch has it for these parameters (all on one CPU or CUDA).

    The same update rule in one kernel over all tensors instead of ~10 small ops per tensor:
    measured 1.9 -> 0.6 ms a step on the image policy (bench/bench_image.py).
    """
    devices = {p.device.type for p in params}
    ok = (len(devices) == 1 and devices <= {"cpu", "cuda"}
          and all(p.is_floating_point() for p in params))
    return {"fused": True} if ok else {}


class _Cost:
    """The probit's c and beta during training: each a learned 0-d parameter or a plain number.

    beta is learned as log beta (it must stay > 0).
    """

    def __init__(self, value: float, learn: bool, beta: float = 1.0, learn_beta: bool = False,
                 device=None):
        def param(v):
            return torch.nn.Parameter(torch.tensor(v, dtype=torch.float64, device=device))
        self.param = param(float(value)) if learn else None
        self.log_beta = param(math.log(beta)) if learn_beta else None
        self.value, self.beta_value = float(value), float(beta)

    def __call__(self):
        return self.param if self.param is not None else self.value

    def beta(self):
        return self.log_beta.exp() if self.log_beta is not None else self.beta_value

    @property
    def params(self) -> list:
        return [p for p in (self.param, self.log_beta) if p is not None]

    def get(self) -> float:
        return float(self.param.detach()) if self.param is not None else self.value

    def get_beta(self) -> float:
        return float(self.beta().detach()) if self.log_beta is not None else self.beta_value

    def set(self, value: float) -> None:
        if self.param is not None:
            with torch.no_grad():
                self.param.fill_(value)
        self.value = float(value)

    def state(self) -> tuple[float, float]:
        return self.get(), self.get_beta()

    def load(self, state) -> None:
        self.set(state[0])
        if self.log_beta is not None:
            with torch.no_grad():
                self.log_beta.fill_(math.log(state[1]))


def _state_of(modules, cost):
    return [copy.deepcopy(m.state_dict()) for m in modules], None if cost is None else cost.state()


def _load_state(modules, cost, state):
    for m, sd in zip(modules, state[0]):
        m.load_state_dict(sd)
    if cost is not None:
        cost.load(state[1])


def _select_and_fit(make_loss, modules, data, config, gen, rng, progress, desc,
                    cost=None, on_eval=None, sample_weight=None):
    """Pick the update count on held-out blocks, then refit on everything (see module doc)."""
    train_idx, val_idx = _split(data, config, rng)
    n_all = data["nu"].shape[0]
    budget = _budget(len(train_idx), config)
    eval_every = config.eval_every or max(1, budget // 40)
    c_param = () if cost is None else cost.params
    start = _state_of(modules, cost)
    loop = _Loop(make_loss, modules, config, gen, c_param, sample_weight)
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
        loop = _Loop(make_loss, modules, config, gen, c_param, sample_weight)
        res2 = loop.run(np.arange(n_all), refit, None, eval_every, on_eval, bar)
        metrics.update(early_stopping="holdout to choose updates, then refit on all data",
                       updates=refit, refit_history=res2["history"])
    return metrics


def _check_compatible(init: MileModel, obs_spec: ObsSpec, action_spec: ActionSpec) -> None:
    if not isinstance(init, MileModel):
        raise ValueError(f"init must be a MileModel or None, got {type(init).__name__}")
    if init.obs_spec != obs_spec:
        raise ValueError(f"init was trained on observations {init.obs_spec}, not {obs_spec}")
    if init.action_spec != action_spec:
        raise ValueError(f"init was trained on actions {init.action_spec}, not {action_spec}")
