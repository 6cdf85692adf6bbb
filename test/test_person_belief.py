"""The simulated person's belief about the robot (sim_human `mental_model`).

The person's p follows its mental model: a belief equal to the expert gives p ~ 0, a wrong one
p > 0; "policy" swaps in the checkpoint the robot runs (its mean action); bad values are refused
with the parameter named; the demo hands each iteration's person the checkpoint it delivered.
"""
import numpy as np
import pytest
import torch

from mile_ros import params
from mile_ros.params import ConfigError
from mile_ros.sim.experts import ExpertInfo
from mile_ros.sim.person import ExecutedPolicy, SimulatedPerson
from mile_ros.sim.person_driver import apply_mental_model, check_mental_model, load_belief

torch.set_num_threads(1)
S, K, SIGMA = 3, 2, 0.1


def expert_mean(states):
    return np.tanh(np.asarray(states)[..., :2])


def expert(state):
    mu = expert_mean(state)
    return ExpertInfo(action=mu, mean=mu, log_std=np.full(2, np.log(SIGMA)))


class Belief:
    """A policy whose mean is the expert's plus `offset`, with spread exp(log_std)."""

    def __init__(self, offset=0.0, log_std=-5.0):
        self.offset, self.log_std = offset, log_std

    def action_distribution(self, stacked):
        mu = expert_mean(np.atleast_2d(stacked)[:, :S]) + self.offset
        return mu, np.full(mu.shape, self.log_std)


def person_p(mental, c=20.0, n=50):
    person = SimulatedPerson(expert, mental, c=c, state_dim=S)
    states = np.random.default_rng(0).normal(size=(n, K * S))
    return np.array([person.probability(s) for s in states])


def test_belief_equal_to_the_expert_gives_no_interventions_a_wrong_one_does():
    assert person_p(ExecutedPolicy(Belief())).max() < 1e-6
    assert person_p(ExecutedPolicy(Belief(offset=0.5))).min() > 0.5   # Kc = 2 x 25: p = Phi(~4)
    assert person_p(ExecutedPolicy(Belief(offset=0.2))).mean() > 0.0
    # the robot runs the mean: the policy's own spread is not part of the belief
    assert person_p(Belief(log_std=1.0)).min() > 0.99
    assert person_p(ExecutedPolicy(Belief(log_std=1.0))).max() < 1e-6


def test_policy_mental_model_swaps_the_belief_and_keeps_c():
    wrong, right = Belief(offset=0.5), Belief()
    p = {**params.resolve("sim_human"), "mental_model": "policy", "mental_checkpoint": ""}
    person = SimulatedPerson(expert, wrong, c=20.0, state_dim=S)
    info = apply_mental_model(person, {"c": 20.0}, {**p, "mental_model": "initial"}, right,
                              ["x", "y", "z"], K)
    assert person.mental_model is wrong and info["mental_model"].startswith("initial")
    info = apply_mental_model(person, {"c": 20.0}, p, right, ["x", "y", "z"], K)
    assert isinstance(person.mental_model, ExecutedPolicy) and person.mental_model.policy is right
    assert info == {"c": 20.0, "mental_model": "policy initial policy"} and person.c == 20.0
    state = np.zeros(K * S)
    assert person.probability(state) < 1e-6


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from mile_ros.learning import ActionSpec, MileConfig, ObsSpec, train_bc
    from mile_ros.learning.checkpoint import save_checkpoint, update_latest

    r = np.random.default_rng(0)
    eps = [{"state": s, "a_r": expert_mean(s)} for s in r.normal(size=(3, 30, S))]
    model = train_bc(eps, ObsSpec(["x", "y", "z"], K), ActionSpec(["dx", "dy"]),
                     MileConfig(hidden=(16,), min_updates=20, max_updates=20), target="a_r",
                     progress=False)
    root = tmp_path_factory.mktemp("ck")
    save_checkpoint(model, root / "iter1")
    update_latest(root, root / "iter1")
    return root, model


def test_mental_checkpoint_is_loaded_as_the_robot_runs_it(checkpoint):
    root, model = checkpoint
    for path in (root / "iter1", root):                  # a directory, or a root with `latest`
        belief = ExecutedPolicy(load_belief(str(path), ["x", "y", "z"], K))
        x = np.random.default_rng(1).normal(size=(5, K * S))
        mu, log_std = belief.action_distribution(x)
        np.testing.assert_allclose(mu, model.action_distribution(x)[0], atol=1e-6)
        assert np.allclose(np.exp(log_std), ExecutedPolicy.BELIEF_STD)
    with pytest.raises(ConfigError, match="'mental_checkpoint'.*observation spec mismatch"):
        load_belief(str(root), ["x", "y", "w"], K)       # not the task's state vector
    with pytest.raises(ConfigError, match="'mental_checkpoint'.*observation spec mismatch"):
        load_belief(str(root), ["x", "y", "z"], K + 1)   # not the person's frame stack


def test_bad_mental_model_values_name_the_parameter(tmp_path):
    p = params.resolve("sim_human")
    assert p["mental_model"] == "initial" and p["mental_checkpoint"] == ""
    check_mental_model(p)
    check_mental_model({**p, "mental_model": "policy"})          # "": the initial policy
    with pytest.raises(ConfigError, match="parameter 'mental_model' of node 'sim_human' must be "
                                          "one of initial, policy, got 'frozen'"):
        params.resolve("sim_human", overrides={"mental_model": "frozen"})
    with pytest.raises(ConfigError, match="'mental_model' must be one of initial, policy"):
        check_mental_model({**p, "mental_model": "frozen"})
    with pytest.raises(ConfigError, match="'mental_checkpoint': no checkpoint directory"):
        check_mental_model({**p, "mental_model": "policy",
                            "mental_checkpoint": str(tmp_path / "nowhere")})


def test_demo_gives_each_iterations_person_the_checkpoint_it_delivered(tmp_path):
    from mile_ros.tools.demo import build_parser
    from mile_ros.tools.demo_graph import DemoGraph

    args = build_parser().parse_args(["--out", str(tmp_path), "--mental-model", "policy"])
    graph = DemoGraph(args, tmp_path)
    assert graph.values(1)["sim_human"]["mental_checkpoint"] == ""     # before iteration 0
    graph.initial = tmp_path / "checkpoints" / "iter0-initial"
    first = graph.values(1)["sim_human"]
    assert first["mental_checkpoint"] == str(graph.initial) and first["mental_model"] == "policy"
    graph.running = tmp_path / "checkpoints" / "iter1-x"                # delivered after iter 1
    assert graph.values(2)["sim_human"]["mental_checkpoint"] == str(graph.running)
    default = DemoGraph(build_parser().parse_args(["--out", str(tmp_path)]), tmp_path)
    assert default.values(1)["sim_human"]["mental_model"] == "initial"  # the YAML's value
