"""Every simulated task behind one small adapter.

Meta-World v3 (goal-observable), LunarLander-v3, the simulated WidowX, and two toy tasks for fast
tests.

Every task looks the same to the rest of the benchmark:

    task = make_task("metaworld/drawer-open", seed=0)
    obs = task.reset(seed=123)              # float64[S]
    obs, reward, done, info = task.step(a)  # info["success"] is the episode's verdict once done
    e = task.expert(obs)                    # ExpertInfo: the expert as a distribution + its action

Observations are stacked by `mile_ros.learning.specs` (`FrameStacker` online, `stack_frames` for
a whole episode): the current state first, then the previous three.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mile_ros.learning.specs import FRAME_STACK, FrameStacker
from mile_ros.sim.experts import ExpertInfo, GaussianScriptedExpert, LunarLanderExpert

SUCCESS_RETURN_LUNARLANDER = 200.0  # gymnasium's "solved" threshold for one episode


class UnknownNameError(ValueError):
    """A task or method name that does not exist; the message lists the valid ones."""


def metaworld_task_names() -> list[str]:
    """Meta-World v3 tasks that have both a goal-observable env and a scripted policy."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE
    from metaworld.policies import ENV_POLICY_MAP
    names = [k[: -len("-goal-observable")] for k in ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE]
    return sorted(n[: -len("-v3")] for n in names if n in ENV_POLICY_MAP)


EXTRA_TASKS: dict = {}  # name -> factory(seed, options) -> BenchTask (see register_task)


def register_task(name: str, factory) -> None:
    """Make `factory(seed, options) -> BenchTask` available as --task `name` (toy tasks, tests)."""
    EXTRA_TASKS[name] = factory


def valid_task_names() -> list[str]:
    try:
        mw = [f"metaworld/{n}" for n in metaworld_task_names()]
    except ImportError:  # metaworld not installed: the other tasks still work
        mw = []
    return ["lunarlander", "widowx"] + mw + sorted(EXTRA_TASKS)


def canonical_task_name(name: str) -> str:
    """Map a task name to its canonical name, or raise UnknownNameError.

    E.g. 'metaworld/drawer-open-v3', 'LunarLander-v3', ... -> the canonical name.
    """
    n = name.strip()
    if n in EXTRA_TASKS:
        return n
    low = n.lower()
    if low in ("lunarlander", "lunarlander-v3", "lunar-lander"):
        return "lunarlander"
    if low in ("widowx", "sim/widowx"):
        return "widowx"
    if low.startswith("metaworld/"):
        n = "metaworld/" + (low[len("metaworld/"):].removesuffix("-goal-observable")
                            .removesuffix("-v3"))
    valid = valid_task_names()
    if n not in valid:
        raise UnknownNameError(f"unknown task '{name}'; valid tasks: {', '.join(valid)}")
    return n


class BenchTask:
    """Common interface; see the module docstring."""

    name: str
    kind: str            # "continuous" | "discrete"
    obs_dim: int
    act_dim: int         # continuous: action dimensions; discrete: number of actions
    max_steps: int
    state_names: list[str]
    action_names: list[str]

    def reset(self, seed: int) -> np.ndarray: ...
    def step(self, action) -> tuple[np.ndarray, float, bool, dict]: ...
    def expert(self, obs: np.ndarray) -> ExpertInfo: ...
    def close(self) -> None: ...


class MetaWorldTask(BenchTask):
    """A goal-observable Meta-World v3 task; the episode ends at success or after `max_steps`.

    Each reset seed draws its own object/goal positions (seeded, so evaluation seeds are fixed).
    """

    kind = "continuous"

    def __init__(self, task: str, seed: int = 0, max_steps: int = 200, expert_sigma: float = 0.1):
        import warnings

        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE
        from metaworld.policies import ENV_POLICY_MAP
        warnings.filterwarnings("ignore", message="Constant\\(s\\) may be too high")
        self.name = f"metaworld/{task}"
        self._env = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{task}-v3-goal-observable"](seed=seed)
        self._env._freeze_rand_vec = False  # new task configuration at every reset ...
        self._env.seeded_rand_vec = True    # ... drawn from the env's seeded generator
        self._env.reset()  # some tasks (door-open) differ on their first reset only: burn it
        self._policy = ENV_POLICY_MAP[f"{task}-v3"]()
        self._expert = GaussianScriptedExpert(self._policy.get_action, sigma=expert_sigma)
        self.obs_dim = int(self._env.observation_space.shape[0])
        self.act_dim = int(self._env.action_space.shape[0])
        self.max_steps = min(int(max_steps), int(self._env.max_path_length))
        self.state_names = [f"s{i}" for i in range(self.obs_dim)]
        self.action_names = ["dx", "dy", "dz", "gripper"]
        self._t = 0

    def reset(self, seed: int) -> np.ndarray:
        self._env.seed(int(seed))
        obs, _ = self._env.reset()
        self._t = 0
        return np.asarray(obs, dtype=np.float64)

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        obs, reward, _, truncated, info = self._env.step(a)
        self._t += 1
        success = bool(info.get("success", 0.0))
        done = success or truncated or self._t >= self.max_steps
        return np.asarray(obs, dtype=np.float64), float(reward), done, {"success": success}

    def expert(self, obs):
        return self._expert(obs)

    def close(self):
        self._env.close()


class LunarLanderTask(BenchTask):
    """LunarLander-v3, 4 discrete actions.

    An episode counts as a success when its return >= 200.
    """

    kind = "discrete"

    def __init__(self, seed: int = 0, max_steps: int = 1000, expert_temperature: float = 0.05):
        import gymnasium as gym
        self.name = "lunarlander"
        self._env = gym.make("LunarLander-v3", max_episode_steps=int(max_steps))
        self._expert = LunarLanderExpert(self._env, temperature=expert_temperature)
        self.obs_dim, self.act_dim, self.max_steps = 8, 4, int(max_steps)
        self.state_names = ["x", "y", "vx", "vy", "angle", "angular_velocity", "leg1", "leg2"]
        self.action_names = ["noop", "left_engine", "main_engine", "right_engine"]
        self._return = 0.0

    def reset(self, seed: int) -> np.ndarray:
        obs, _ = self._env.reset(seed=int(seed))
        self._return = 0.0
        return np.asarray(obs, dtype=np.float64)

    def step(self, action):
        obs, reward, terminated, truncated, _ = self._env.step(int(action))
        self._return += float(reward)
        done = bool(terminated or truncated)
        info = {"success": done and self._return >= SUCCESS_RETURN_LUNARLANDER,
                "return": self._return}
        return np.asarray(obs, dtype=np.float64), float(reward), done, info

    def expert(self, obs):
        return self._expert(obs)

    def close(self):
        self._env.close()


class WidowXBenchTask(BenchTask):
    """mile_ros.sim.widowx.WidowXTask through the same adapter.

    Its scripted expert (privileged state) becomes a Gaussian with fixed sigma like the Meta-World
    ones. Its state is what a state policy reads, `features="policy"` (widowx.POLICY_STATE_NAMES,
    a named part of the observation the arm publishes), the whole observation ("all"), or the
    observation names listed.
    """

    kind = "continuous"

    def __init__(self, seed: int = 0, max_steps: int | None = None, expert_sigma: float = 0.1,
                 features="policy", **kwargs):
        from mile_ros.sim.widowx import POLICY_STATE_NAMES, WidowXTask
        self.name = "widowx"
        self._env = WidowXTask(seed=seed, **kwargs)
        self._expert = GaussianScriptedExpert(lambda _obs: self._env.expert_action(),
                                              sigma=expert_sigma)
        names = list(self._env.observation_names)
        named = {"policy": POLICY_STATE_NAMES, "all": names}
        chosen = named.get(features, features) if isinstance(features, str) else features
        if isinstance(chosen, str) or any(n not in names for n in chosen):
            raise ValueError(f"WidowX features must be 'policy', 'all' or names of {names}, "
                             f"got {features!r}")
        self.state_names = list(chosen)
        self._cols = [names.index(n) for n in self.state_names]
        self.action_names = list(self._env.action_names)
        self.obs_dim, self.act_dim = len(self.state_names), len(self.action_names)
        self.max_steps = int(max_steps or self._env.max_episode_steps)
        self._t = 0

    def reset(self, seed: int) -> np.ndarray:
        obs, _ = self._env.reset(seed=int(seed))
        self._t = 0
        return np.asarray(obs, dtype=np.float64)[self._cols]

    def step(self, action):
        obs, reward, terminated, truncated, info = self._env.step(
            np.clip(np.asarray(action, float), -1, 1))
        self._t += 1
        success = bool(info.get("success", False))
        done = success or bool(terminated or truncated) or self._t >= self.max_steps
        return (np.asarray(obs, dtype=np.float64)[self._cols], float(reward), done,
                {"success": success})

    def expert(self, obs):
        return self._expert(obs)

    def render(self, width: int, height: int) -> np.ndarray:
        """Return the workspace camera's frame of the current state (WidowXTask.render)."""
        return self._env.render(width, height)

    def close(self):
        self._env.close()


@dataclass
class TaskOptions:
    max_steps: int | None = None        # None: the task's default cap
    expert_sigma: float = 0.1           # Gaussian experts (Meta-World, WidowX)
    expert_temperature: float = 0.05    # LunarLander's Boltzmann expert


DEFAULT_MAX_STEPS = {"lunarlander": 1000, "metaworld": 500}   # Meta-World: the paper's 500


def make_task(name: str, seed: int = 0, options: TaskOptions | None = None) -> BenchTask:
    o = options or TaskOptions()
    n = canonical_task_name(name)
    if n in EXTRA_TASKS:
        return EXTRA_TASKS[n](seed, o)
    if n == "lunarlander":
        return LunarLanderTask(seed, o.max_steps or DEFAULT_MAX_STEPS["lunarlander"],
                               o.expert_temperature)
    if n == "widowx":
        return WidowXBenchTask(seed, o.max_steps, o.expert_sigma)
    return MetaWorldTask(n.split("/", 1)[1], seed, o.max_steps or DEFAULT_MAX_STEPS["metaworld"],
                         o.expert_sigma)


def evaluate_policy(task_name: str, policy_fn, seeds, options: TaskOptions | None = None,
                    frame_stack: int = FRAME_STACK, n_envs: int = 10,
                    pool: list[BenchTask] | None = None) -> dict:
    """Run `policy_fn(stacked_obs[B, k*S]) -> actions[B]` (no person) on every seed.

    `n_envs` episodes in lockstep so the policy runs batched. Returns per-seed success, return and
    length lists.
    """
    seeds = [int(s) for s in seeds]
    own = pool is None
    pool = pool or [make_task(task_name, seed=i, options=options)
                    for i in range(min(n_envs, len(seeds)))]
    out = {"seeds": seeds, "success": [], "return": [], "length": []}
    try:
        for start in range(0, len(seeds), len(pool)):
            wave = seeds[start:start + len(pool)]
            envs = pool[: len(wave)]
            stackers = [FrameStacker(frame_stack) for _ in wave]
            obs = np.stack([st.reset(e.reset(s)) for st, e, s in zip(stackers, envs, wave)])
            live = np.ones(len(wave), bool)
            rets, lens, succ = (np.zeros(len(wave)), np.zeros(len(wave), int),
                                np.zeros(len(wave), bool))
            while live.any():
                idx = np.flatnonzero(live)
                acts = policy_fn(obs[idx])
                for j, a in zip(idx, acts):
                    o, r, done, info = envs[j].step(a)
                    rets[j] += r
                    lens[j] += 1
                    obs[j] = stackers[j].push(o)
                    if done:
                        live[j], succ[j] = False, bool(info["success"])
            out["success"] += succ.tolist()
            out["return"] += rets.tolist()
            out["length"] += lens.tolist()
    finally:
        if own:
            for e in pool:
                e.close()
    return out


# --- toy tasks ----------------------------------------------------------------------------------
# Tiny tasks for fast tests and smoke runs, registered as `toy/reach` (continuous, 2-D actions)
# and `toy/grid` (discrete, 4 actions). Both: move a point from a random start to a goal drawn
# near (0.5, 0.5).
#
#     reach: state (x, y, gx, gy), action (vx, vy) in [-1,1]^2, step 0.1 * action, success when
#            within 0.1 of the goal; expert = clip((g - x) / 0.1) as a Gaussian.
#     grid:  same state, actions +x, -x, +y, -y with step 0.1; expert = Boltzmann over the
#            projection of each move on the direction to the goal.
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
        move = (MOVES[int(action)] if self.kind == "discrete"
                else np.clip(np.asarray(action, float), -1, 1))
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
        return ToyReach(discrete, options.max_steps or 30, options.expert_sigma,
                        options.expert_temperature)
    return make


register_task("toy/reach", _factory(False))
register_task("toy/grid", _factory(True))
