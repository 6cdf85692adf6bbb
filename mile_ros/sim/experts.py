"""Experts as probability distributions, so the simulated person's probit model has log-probs.

- Continuous (Meta-World scripted policies, the WidowX scripted expert):
  pi*(a|s) = N(mu(s), sigma^2 I) with mu(s) the scripted action clipped to the action box and a
  fixed, configurable sigma.
  The expert's action when it intervenes is mu(s) itself.
- LunarLander: gymnasium's heuristic lander turned into a Boltzmann distribution. The heuristic
  compares two control errors (hover_todo, angle_todo) with thresholds; each action gets the score
  the rule compares it by -- noop 0.05 (the dead band), left engine angle_todo, main engine
  hover_todo, right engine -angle_todo -- and pi*(a|s) = softmax(score / T). The argmax is the
  heuristic's own choice (up to ties), which is the action it takes when it intervenes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ANGLE_LIMIT = 0.4  # the heuristic's own constants
DEAD_BAND = 0.05


@dataclass
class ExpertInfo:
    """The expert at one state: its action, and its distribution (mean/log_std or logits)."""

    action: np.ndarray | int
    mean: np.ndarray | None = None
    log_std: np.ndarray | None = None
    logits: np.ndarray | None = None


class GaussianScriptedExpert:
    def __init__(self, scripted_action, sigma: float = 0.1):
        if not sigma > 0:
            raise ValueError(f"expert sigma must be > 0, got {sigma}")
        self.scripted_action = scripted_action
        self.log_sigma = float(np.log(sigma))

    def __call__(self, obs) -> ExpertInfo:
        mu = np.clip(np.asarray(self.scripted_action(obs), dtype=np.float64), -1.0, 1.0)
        return ExpertInfo(action=mu, mean=mu, log_std=np.full_like(mu, self.log_sigma))


def lunar_lander_scores(s: np.ndarray) -> np.ndarray:
    """Return the heuristic's control errors as per-action scores [noop, left, main, right]."""
    angle_targ = np.clip(s[0] * 0.5 + s[2] * 1.0, -ANGLE_LIMIT, ANGLE_LIMIT)
    hover_targ = 0.55 * abs(s[0])
    angle_todo = (angle_targ - s[4]) * 0.5 - s[5] * 1.0
    hover_todo = (hover_targ - s[1]) * 0.5 - s[3] * 0.5
    if s[6] or s[7]:  # legs touch the ground: only slow the fall
        angle_todo, hover_todo = 0.0, -s[3] * 0.5
    return np.array([DEAD_BAND, angle_todo, hover_todo, -angle_todo])


class LunarLanderExpert:
    def __init__(self, env=None, temperature: float = 0.05):
        if not temperature > 0:
            raise ValueError(f"expert temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def __call__(self, obs) -> ExpertInfo:
        scores = lunar_lander_scores(np.asarray(obs, dtype=np.float64))
        z = scores / self.temperature
        logits = z - (np.max(z) + np.log(np.sum(np.exp(z - np.max(z)))))  # log-softmax
        return ExpertInfo(action=int(np.argmax(scores)), logits=logits)
