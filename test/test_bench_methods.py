"""Every method trains on a tiny data set and improves a toy task; the protocol loop works.

The protocol loop runs, resumes and equalises intervention counts.
"""
import numpy as np
import pytest
import torch

from mile_ros.benchmark.baselines import (
    BASELINES,
    BaselineConfig,
    rlif_transitions,
    sirius_weights,
)
from mile_ros.benchmark.mile_adapter import train_mile_on
from mile_ros.benchmark.protocols import METHODS, BenchConfig, run_bench
from mile_ros.benchmark.results import load_results
from mile_ros.learning.specs import stack_frames
from mile_ros.sim.initial import (
    InitialConfig,
    build_initial_policy,
    build_person,
    demos_for,
    seeds_for,
)
from mile_ros.sim.person import collect_episode
from mile_ros.sim.tasks import evaluate_policy, make_task

torch.set_num_threads(1)
SMALL = InitialConfig(n_demos=1, hidden=(32, 32), mental_rollouts=5, closed_loop_episodes=3)
FAST = BaselineConfig(max_steps=400, rlif_steps=300, rlif_hidden=(32, 32))
EVAL = range(500, 540)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    task = make_task("toy/reach")
    initial, _ = build_initial_policy("toy/reach", 0, SMALL, cache, task=task)
    person, info = build_person("toy/reach", 0, initial, SMALL, cache, task=task)
    episodes = [collect_episode(task, initial, person, s, 4, [s]) for s in seeds_for(0, 3, 10)]
    demos = demos_for("toy/reach", 0, SMALL, task)
    before = np.mean(evaluate_policy("toy/reach", initial.act, EVAL)["return"])
    return task, initial, person, info, episodes, demos, before


@pytest.mark.parametrize("method", METHODS)
def test_method_improves_toy_task(toy, method):
    task, initial, _, _, episodes, demos, before = toy
    assert sum(e["nu"].sum() for e in episodes) > 10  # the person did intervene
    if method == "mile":
        policy = train_mile_on(initial, episodes, task, {"max_steps": 400}, seed=1)
    else:
        policy = BASELINES[method](initial, episodes, demos, FAST, seed=1)
    after = np.mean(evaluate_policy("toy/reach", policy.act, EVAL)["return"])
    # return = -(summed distance to the goal); the initial policy wanders, the expert goes straight
    assert after > before + 0.25 * abs(before), (method, before, after)


def test_person_calibration_reports_closed_loop_rate(toy):
    _, _, person, info, episodes, _, _ = toy
    assert info["open_loop_rate"] == pytest.approx(SMALL.target_rate, abs=1e-3)
    assert abs(info["closed_loop_rate"] - SMALL.target_rate) < 0.1
    assert person.c == info["c"]
    for e in episodes:  # interventions carry the expert's action; the rest carry none
        assert np.isnan(e["a_h"][~e["nu"]]).all() and not np.isnan(e["a_h"][e["nu"]]).any()
        assert np.allclose(e["executed"][e["nu"]], e["a_h"][e["nu"]])
        assert np.allclose(e["executed"][~e["nu"]], e["a_r"][~e["nu"]])


def test_discrete_methods_train(tmp_path):
    task = make_task("toy/grid")
    initial, _ = build_initial_policy("toy/grid", 0, SMALL, tmp_path, task=task)
    person, _ = build_person("toy/grid", 0, initial, SMALL, tmp_path, task=task)
    episodes = [collect_episode(task, initial, person, s, 4, [s]) for s in seeds_for(0, 3, 4)]
    demos = demos_for("toy/grid", 0, SMALL, task)
    obs = stack_frames(episodes[0]["state"], 4)
    for method in METHODS:
        fast = ({"max_steps": 50} if method == "mile"
                else BaselineConfig(max_steps=50, rlif_steps=50))
        pol = (train_mile_on(initial, episodes, task, fast, 0) if method == "mile"
               else BASELINES[method](initial, episodes, demos, fast, 0))
        a = pol.act(obs)
        assert a.shape == (len(obs),) and ((0 <= a) & (a < 4)).all(), method


def test_sirius_and_rlif_rules():
    nu = np.array([0, 0, 0, 1, 1, 0, 0, 1], bool)
    w = sirius_weights([nu], window=2, n_demo=3)
    assert list(w[:3]) == [1, 1, 1]                       # demos
    assert list(w[3:][[1, 2, 5, 6]]) == [0, 0, 0, 0]      # the 2 robot ticks before each onset
    assert w[3:][0] == 1                                  # plain robot tick
    # half the weight
    assert w[3:][nu].sum() == pytest.approx(w[~np.r_[np.zeros(3, bool), nu]].sum())
    ep = {"state": np.zeros((8, 2)), "executed": np.zeros((8, 2)), "nu": nu}
    _, _, r, _, d = rlif_transitions([ep], [], 4)
    assert list(r) == [0, 0, 0, -1, 0, 0, 0, -1] and d[-1] == 1  # -1 where an intervention starts


def test_protocol_runs_resumes_and_equalises(tmp_path):
    out = tmp_path / "r.json"
    cfg = {"task": "toy/reach", "methods": ["mile", "hg-dagger"], "iterations": 2, "episodes": 2,
           "seeds": [0], "n_eval": 10, "initial": SMALL, "baseline": FAST,
           "mile": {"max_steps": 100}, "n_envs": 5}
    run_bench(BenchConfig(**cfg), out, progress=False, cache_dir=tmp_path / "c")
    data = load_results(out)
    mile, hg = data["methods"]["mile"]["0"], data["methods"]["hg-dagger"]["0"]
    assert [r["iteration"] for r in mile] == [0, 1, 2]
    assert hg[1]["interventions"] >= mile[1]["interventions"] and hg[1]["episodes"] >= 2
    assert data["config"]["iterations"] == 2 and data["experts"]["expert"]["success_rate"] > 0.9
    # resume: re-running does nothing new; a longer run continues from the saved state
    stamp, wall = mile[1]["train_seconds"], data["timing"]["0"]
    run_bench(BenchConfig(**cfg), out, progress=False, cache_dir=tmp_path / "c")
    again = load_results(out)
    assert again["methods"]["mile"]["0"][1]["train_seconds"] == stamp
    assert again["timing"]["0"] == wall      # a finished seed's wall time is not added to
    with pytest.raises(ValueError, match="different configuration"):
        run_bench(BenchConfig(**{**cfg, "episodes": 3}), out, progress=False,
                  cache_dir=tmp_path / "c")
    cfg["iterations"] = 3
    run_bench(BenchConfig(**cfg), out, progress=False, cache_dir=tmp_path / "c")
    longer = load_results(out)["methods"]["mile"]["0"]
    assert [r["iteration"] for r in longer] == [0, 1, 2, 3] and longer[1]["train_seconds"] == stamp
    assert load_results(out)["timing"]["0"] > wall


def test_mile_warm_start_option(toy):
    """Check warm_start: False trains from the initial policy, True from the previous model.

    warm_start=False (default, like the baselines) trains from the initial policy whatever the
    previous model was; warm_start=True continues from the previous model (policy and mental).
    """
    from mile_ros.benchmark.protocols import MileMethod
    task, initial, _, _, episodes, demos, _ = toy
    prev = train_mile_on(initial, episodes[:3], task, {"max_steps": 60}, seed=2, demos=demos)
    x = torch.as_tensor(np.concatenate([stack_frames(e["state"], 4) for e in episodes[3:6]]),
                        dtype=torch.float32)

    def fit(m, p):
        return m.train(p, initial, episodes, demos, task, seed=5).policy(x)[0]
    cold = MileMethod({"max_steps": 60})
    assert torch.equal(fit(cold, prev), fit(cold, None))      # the previous model is not used
    warm = MileMethod({"max_steps": 60, "warm_start": True})
    assert torch.equal(fit(warm, None), fit(cold, None))      # first iteration: the initial policy
    assert not torch.allclose(fit(warm, prev), fit(cold, None))
