"""Every method trains on a tiny data set and improves a toy task; the protocol loop works.

The protocol loop runs, resumes and equalises intervention counts.
"""
import numpy as np
import pytest
import torch

from mile_ros.benchmark.protocols import METHODS, BenchConfig, run_bench, train_mile_method
from mile_ros.benchmark.results import load_results
from mile_ros.learning import MileConfig
from mile_ros.learning.baselines import (
    BASELINES,
    BaselineConfig,
    rlif_transitions,
    sirius_weights,
)
from mile_ros.learning.specs import stack_frames
from mile_ros.sim.initial import (
    InitialConfig,
    build_initial_policy,
    build_person,
    expert_demos,
    seeds_for,
)
from mile_ros.sim.person import collect_episode
from mile_ros.sim.tasks import evaluate_policy, make_task

torch.set_num_threads(1)
SMALL = InitialConfig(n_demos=1, hidden=(32, 32), mental_rollouts=5, closed_loop_episodes=3)
FAST = BaselineConfig(rlif_steps=300, rlif_hidden=(32, 32))
TRAIN = {"max_updates": 400, "min_updates": 100}


def bench_cfg(**kw):
    return BenchConfig(**{"task": "toy/reach", "methods": ["mile"], "train": TRAIN, **kw})


EVAL = range(500, 540)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    task = make_task("toy/reach")
    initial, _ = build_initial_policy("toy/reach", 0, SMALL, cache, task=task)
    person, info = build_person("toy/reach", 0, initial, SMALL, cache, task=task)
    episodes = [collect_episode(task, initial, person, s, 4, [s]) for s in seeds_for(0, 3, 10)]
    demos = expert_demos("toy/reach", 0, 2, SMALL, task)
    before = np.mean(evaluate_policy("toy/reach", initial.act, EVAL)["return"])
    return task, initial, person, info, episodes, demos, before


@pytest.mark.parametrize("method", METHODS)
def test_method_improves_toy_task(toy, method):
    task, initial, _, _, episodes, demos, before = toy
    assert sum(e["nu"].sum() for e in episodes) > 10  # the person did intervene
    if method == "mile":
        policy = train_mile_method(bench_cfg(), None, initial, episodes, seed=1)
    else:
        policy = BASELINES[method](initial, episodes, [], FAST,
                                   MileConfig.with_settings(TRAIN, seed=1))
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
    demos = expert_demos("toy/grid", 0, 1, SMALL, task)
    obs = stack_frames(episodes[0]["state"], 4)
    short = {"max_updates": 50, "min_updates": 20}
    for method in METHODS:
        pol = (train_mile_method(bench_cfg(train=short), None, initial, episodes, 0)
               if method == "mile"
               else BASELINES[method](initial, episodes, demos, BaselineConfig(rlif_steps=50),
                                      MileConfig.with_settings(short, seed=0)))
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
    # -1 on the robot's transition before each takeover, not on the person's onset tick
    assert list(r) == [0, 0, -1, 0, 0, 0, -1, 0] and d[-1] == 1
    first = {"state": np.zeros((3, 2)), "executed": np.zeros((3, 2)),
             "nu": np.array([1, 1, 0], bool)}
    assert list(rlif_transitions([first], [], 4)[2]) == [0, 0, 0]  # no robot transition before


def test_protocol_runs_resumes_and_equalises(tmp_path):
    out = tmp_path / "r.json"
    cfg = {"task": "toy/reach", "methods": ["mile", "hg-dagger"], "iterations": 2, "episodes": 2,
           "seeds": [0], "n_eval": 10, "initial": SMALL, "baseline": FAST,
           "train": {"max_updates": 100, "min_updates": 50}, "n_envs": 5}
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
    task, initial, _, _, episodes, _, _ = toy
    short = {"max_updates": 60, "min_updates": 20}
    prev = train_mile_method(bench_cfg(train=short), None, initial, episodes[:3], seed=2)
    x = np.concatenate([stack_frames(e["state"], 4) for e in episodes[3:6]])

    def fit(cfg, p):
        return train_mile_method(cfg, p, initial, episodes, seed=5).action_distribution(x)[0]
    cold, warm = bench_cfg(train=short), bench_cfg(train=short, warm_start=True)
    assert np.array_equal(fit(cold, prev), fit(cold, None))    # the previous model is not used
    assert np.array_equal(fit(warm, None), fit(cold, None))    # first iteration: the initial one
    assert not np.allclose(fit(warm, prev), fit(cold, None))


def test_demos_go_to_the_baselines_only(tmp_path, monkeypatch):
    """`demos` N gives every baseline exactly N expert demonstrations and MILE none."""
    import mile_ros.benchmark.protocols as protocols

    seen = {}

    def spy(name):
        def train(initial, episodes, demos, cfg, training):
            seen[name] = len(demos)
            return initial
        return train
    monkeypatch.setattr(protocols, "BASELINES", {k: spy(k) for k in BASELINES})
    real_mile = protocols.train_mile

    def mile_spy(episodes, *a, **kw):
        seen["mile_ticks"] = sum(len(e["state"]) for e in episodes)
        seen["mile_collected"] = sum(len(e["state"]) for e in episodes if "executed" in e)
        return real_mile(episodes, *a, **kw)
    monkeypatch.setattr(protocols, "train_mile", mile_spy)
    for n in (0, 3):
        cfg = BenchConfig(task="toy/reach", methods=METHODS, iterations=1, episodes=1, seeds=[0],
                          n_eval=2, initial=SMALL, baseline=FAST, demos=n,
                          train={"max_updates": 30, "min_updates": 10}, n_envs=2)
        run_bench(cfg, tmp_path / f"d{n}.json", progress=False, cache_dir=tmp_path / "c")
        assert {seen[k] for k in BASELINES} == {n}
        assert seen["mile_ticks"] == seen["mile_collected"] > 0   # MILE: collected ticks only
    demos = expert_demos("toy/reach", 0, 3, SMALL)
    assert len(demos) == 3 and all(len(d["state"]) == len(d["action"]) > 0 for d in demos)


def test_person_helps_more_than_the_initial_policy_alone(toy):
    """The segment person (default) is a plausible expert: collection succeeds more often."""
    task, initial, person, info, episodes, _, _ = toy
    seeds = seeds_for(0, 3, 10)
    alone = type(person)(task.expert, person.mental_model, c=1e12, seed=0,
                         state_dim=task.obs_dim)
    without = [collect_episode(task, initial, alone, s, 4, [s]) for s in seeds]
    assert not any(e["nu"].any() for e in without)
    assisted = np.mean([e["success"] for e in episodes])
    assert assisted > np.mean([e["success"] for e in without]) + 0.2, assisted
    assert info["closed_loop_success"] is not None


@pytest.mark.parametrize("start", [3, 40])
def test_initial_policy_builder_retries_into_its_band(tmp_path, monkeypatch, start):
    """Out of the 10-50% band, the builder retries by its rule and keeps the closest build."""
    import mile_ros.sim.initial as initial_mod
    from mile_ros.sim.initial import BAND, _band_distance, _next_try

    monkeypatch.setattr(initial_mod, "DEFAULT_DEMOS_OTHER", start)   # 40: far too good
    cfg = InitialConfig(hidden=(32, 32), band_tries=3, band_episodes=10, demo_noise=0.05)
    task = make_task("toy/reach")
    _, info = build_initial_policy("toy/reach", 0, cfg, tmp_path, task=task)
    assert info["tries"][0]["n_demos"] == start
    tries = info["tries"]
    assert 1 <= len(tries) <= 3 and info["band"] == list(BAND)
    for a, b in zip(tries, tries[1:]):      # each retry follows the rule from the previous one
        assert _band_distance(a["check_success"]) > 0
        assert (b["n_demos"], b["demo_noise"]) == _next_try(a["n_demos"], a["demo_noise"],
                                                            a["check_success"])
    best = min(_band_distance(t["check_success"]) for t in tries)
    assert _band_distance(info["check_success"]) == best
    assert info["in_band"] == (best == 0)
    if not info["in_band"]:
        assert len(tries) == 3              # it said so after trying every build it may
    if start == 40:
        assert len(tries) > 1               # the retry path ran
