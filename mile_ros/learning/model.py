"""A trained policy with its mental model, specs and normaliser, and a tick-by-tick runner."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mile_ros.learning import mile
from mile_ros.learning.config import MileConfig
from mile_ros.learning.specs import ActionSpec, FrameStacker, Normalizer, ObsSpec


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
        self._stacker = FrameStacker(model.obs_spec.frame_stack)

    def reset(self) -> None:
        self._stacker.clear()

    def stacked(self, state) -> np.ndarray:
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        if state.shape[0] != self.model.obs_spec.state_dim:
            raise ValueError(f"state must have {self.model.obs_spec.state_dim} values "
                             f"({', '.join(self.model.obs_spec.state_names)}), "
                             f"got {state.shape[0]}")
        return self._stacker.step(state)

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
