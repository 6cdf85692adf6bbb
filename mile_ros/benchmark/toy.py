"""Tiny tasks for fast tests and smoke runs, registered as `toy/reach` (continuous, 2-D actions)
and `toy/grid` (discrete, 4 actions). Both: move a point from a random start to a goal drawn
near (0.5, 0.5).

    reach: state (x, y, gx, gy), action (vx, vy) in [-1,1]^2, step 0.1 * action, success when
           within 0.1 of the goal; expert = clip((g - x) / 0.1) as a Gaussian.
    grid:  same state, actions +x, -x, +y, -y with step 0.1; expert = Boltzmann over the
           projection of each move on the direction to the goal.
"""
from __future__ import annotations

import numpy as np

from mile_ros.benchmark.envs import BenchTask, register_task
from mile_ros.sim.experts import ExpertInfo

STEP, RADIUS = 0.1, 0.1
MOVES = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], dtype=np.float64)


class ToyReach(BenchTask):
    def __init__(self, discrete: bool = False, max_steps: int = 30, expert_sigma: float = 0.1,
                 expert_temperature: float = 0.05):
        self.kind = "discrete" if discrete else "continuous"
        self.name = "toy/grid" if discrete else "toy/reach"
        self.obs_dim, self.act_dim = 4, (4 if discrete else 2)
        self.max_steps = int(max_steps)
        self.state_names = ["x", "y", "gx", "gy"]
        self.action_names = ["+x", "-x", "+y", "-y"] if discrete else ["vx", "vy"]
        self.sigma, self.temperature = float(expert_sigma), float(expert_temperature)
        self._s = np.zeros(4)
        self._t = 0

    def reset(self, seed: int) -> np.ndarray:
        rng = np.random.default_rng(int(seed))
        self._s = np.r_[rng.uniform(-1, 1, 2), 0.5 + rng.uniform(-0.2, 0.2, 2)]
        self._t = 0
        return self._s.copy()

    def step(self, action):
        move = MOVES[int(action)] if self.kind == "discrete" else np.clip(np.asarray(action, float), -1, 1)
        self._s[:2] = np.clip(self._s[:2] + STEP * move, -1.5, 1.5)
        self._t += 1
        dist = float(np.linalg.norm(self._s[:2] - self._s[2:]))
        success = dist < RADIUS
        return self._s.copy(), -dist, success or self._t >= self.max_steps, {"success": success}

    def expert(self, obs) -> ExpertInfo:
        d = np.asarray(obs[2:4], float) - np.asarray(obs[:2], float)
        if self.kind == "discrete":
            score = MOVES @ d / max(np.linalg.norm(d), 1e-6)
            z = score / self.temperature
            logits = z - z.max() - np.log(np.exp(z - z.max()).sum())
            return ExpertInfo(action=int(np.argmax(score)), logits=logits)
        mu = np.clip(d / STEP, -1, 1)
        return ExpertInfo(action=mu, mean=mu, log_std=np.full(2, np.log(self.sigma)))

    def close(self) -> None:
        pass


def _factory(discrete):
    def make(seed, options):
        return ToyReach(discrete, options.max_steps or 30, options.expert_sigma, options.expert_temperature)
    return make


register_task("toy/reach", _factory(False))
register_task("toy/grid", _factory(True))
