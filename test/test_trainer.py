"""The MILE / BC trainer: data handling, warm start, determinism, recovering a known person.

The known simulated person: a probit model with a known expert and mental model.
"""
import numpy as np
import pytest
import torch

from mile_ros.learning import (
    ActionSpec,
    MileConfig,
    ObsSpec,
    mile,
    prepare_episodes,
    stack_frames,
    train_bc,
    train_mile,
)
from mile_ros.learning.loop import _budget, _Loop, _split

torch.set_num_threads(1)
S, D = 3, 2
OBS = ObsSpec([f"s{i}" for i in range(S)], frame_stack=4)
ACT = ActionSpec(["dx", "dy"])
SMALL = {"hidden": (64, 64), "batch_size": 128, "lr": 1e-3}


class Person:
    """A simulated person with a known expert and mental model.

    Expert pi_h = N(tanh(We s), 0.1^2); mental model pihat = N(tanh(Wm s), 0.3^2); the robot acts
    from the mental model; interventions follow the probit model with cost c.
    """

    def __init__(self, seed=0):
        r = np.random.default_rng(seed)
        self.we = r.normal(size=(D, S)) * 0.6
        self.wm = self.we + r.normal(size=(D, S)) * 0.6
        self.ls_e, self.ls_m = np.log(0.1), np.log(0.3)
        probe = self.states(r, 1000)
        self.c = mile.estimate_c(0.2, probability_fn=lambda c: self.p(probe, c))

    def p(self, states, c=None):
        mu_e, mu_m = np.tanh(states @ self.we.T), np.tanh(states @ self.wm.T)

        def t(x):
            return torch.tensor(x)
        return mile.intervention_probability_gaussian(
            t(mu_e), t(np.full_like(mu_e, self.ls_e)), t(mu_m), t(np.full_like(mu_m, self.ls_m)),
            self.c if c is None else c).numpy()

    @staticmethod
    def states(r, t):
        s = np.zeros((t, S))
        s[0] = r.normal(size=S)
        for i in range(1, t):
            s[i] = 0.9 * s[i - 1] + 0.45 * r.normal(size=S)
        return s

    def episodes(self, n, t=50, seed=1):
        r = np.random.default_rng(seed)
        out = []
        for _ in range(n):
            s = self.states(r, t)
            nu = r.uniform(size=t) < self.p(s)
            mu_e, mu_m = np.tanh(s @ self.we.T), np.tanh(s @ self.wm.T)
            a_r = np.clip(mu_m + 0.3 * r.normal(size=mu_m.shape), -1, 1)
            a_h = np.clip(mu_e + 0.1 * r.normal(size=mu_e.shape), -1, 1)
            out.append({"state": s, "a_r": a_r, "a_h": np.where(nu[:, None], a_h, np.nan),
                        "nu": nu})
        return out


@pytest.fixture(scope="module")
def person():
    return Person(0)


@pytest.fixture(scope="module")
def data(person):
    return person.episodes(40)


def test_policy_anchor_ties_pi_to_the_robot_where_nobody_intervened(person, data):
    """policy_anchor > 0 adds BC on a_r at robot-driven ticks; 0 is the paper's loss alone."""
    test = person.episodes(10, seed=3)
    x = np.concatenate([stack_frames(e["state"], 4) for e in test])
    states = np.concatenate([e["state"] for e in test])
    mu_robot = np.tanh(states @ person.wm.T)
    gaps = {}
    for w in (0.0, 2.0):
        model, _ = train_mile(data, OBS, ACT, MileConfig(**SMALL, policy_anchor=w),
                              progress=False)
        gaps[w] = np.abs(model.action_distribution(x)[0] - mu_robot).mean()
    assert gaps[2.0] < 0.6 * gaps[0.0], gaps
    with pytest.raises(ValueError, match="policy_anchor"):
        MileConfig(policy_anchor=-1.0).validate()


def test_stack_frames_current_first_and_padded():
    s = np.arange(12, dtype=float).reshape(4, 3)
    out = stack_frames(s, 3)
    assert out.shape == (4, 9)
    np.testing.assert_array_equal(out[0], np.r_[s[0], s[0], s[0]])
    np.testing.assert_array_equal(out[3], np.r_[s[3], s[2], s[1]])
    with pytest.raises(ValueError, match="k must be"):
        stack_frames(s, 0)


def test_mile_recovers_the_simulated_person(person, data):
    test = person.episodes(20, seed=2)
    x = np.concatenate([stack_frames(e["state"], 4) for e in test])
    states = np.concatenate([e["state"] for e in test])
    mu_expert, mu_mental = np.tanh(states @ person.we.T), np.tanh(states @ person.wm.T)
    p_true = person.p(states)

    model, metrics = train_mile(data, OBS, ACT, MileConfig(**SMALL), progress=False)
    mu, _ = model.action_distribution(x)
    p = model.intervention_probability(x)
    err, err_start = np.abs(mu - mu_expert).mean(), np.abs(mu_mental - mu_expert).mean()
    assert err < 0.1 and err < 0.25 * err_start, (err, err_start)        # approaches the expert
    assert abs(p.mean() - p_true.mean()) < 0.04, (p.mean(), p_true.mean())  # intervention rate
    assert np.corrcoef(p, p_true)[0, 1] > 0.75                            # and where they happen
    assert abs(metrics["rate_predicted"] - metrics["rate_observed"]) < 0.04
    assert np.all(np.abs(model.act(x)) <= 1.0)
    # the early stopping held blocks out only to choose the count, then refit on everything
    assert metrics["early_stopping"].startswith("holdout")
    assert metrics["updates"] >= metrics["selected_updates"]


def test_update_budget_scales_with_data_and_split_covers_everything(data):
    cfg = MileConfig(batch_size=100, epochs=10, min_updates=50, max_updates=5000)
    assert _budget(100, cfg) == 50 and _budget(10_000, cfg) == 1000 and _budget(10**6, cfg) == 5000
    prepared = prepare_episodes(data, OBS, ACT)
    tr, va = _split(prepared, MileConfig(holdout=0.2), np.random.default_rng(0))
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(prepared["nu"])
    assert 0.1 < len(va) / len(prepared["nu"]) < 0.3


def test_warm_start_keeps_policy_and_mental_model(data):
    cfg = MileConfig(hidden=(32,), min_updates=30, max_updates=30, pretrain_updates=30)
    first, _ = train_mile(data[:10], OBS, ACT, cfg, progress=False)
    frozen = MileConfig(hidden=(32,), lr=1e-12, c_lr=1e-12, min_updates=5, max_updates=5)
    again, metrics = train_mile(data[10:20], OBS, ACT, frozen, init=first, progress=False)
    assert metrics["warm_start"].startswith("init")
    x = np.random.default_rng(0).normal(size=(20, OBS.stacked_dim))
    for net in ("policy", "mental"):
        for a, b in zip(getattr(first, net).parameters(), getattr(again, net).parameters()):
            assert torch.allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(first.action_distribution(x)[0], again.action_distribution(x)[0],
                               atol=1e-5)
    assert again.normalizer is first.normalizer
    # the warm-started mental model differs from the policy, so a dropped warm start would show
    assert not np.allclose(first.mental(torch.tensor(first.normalizer(x)))[0].detach().numpy(),
                           first.action_distribution(x)[0], atol=1e-3)
    with pytest.raises(ValueError, match="init was trained on"):
        train_mile(data[:5], ObsSpec(["a", "b", "c"], 2), ACT, frozen, init=first, progress=False)


def test_training_is_deterministic(data):
    cfg = MileConfig(hidden=(16,), min_updates=40, max_updates=40, pretrain_updates=10, seed=3)
    m1, _ = train_mile(data[:8], OBS, ACT, cfg, progress=False)
    m2, _ = train_mile(data[:8], OBS, ACT, cfg, progress=False)
    for a, b in zip(list(m1.policy.parameters()) + list(m1.mental.parameters()),
                    list(m2.policy.parameters()) + list(m2.mental.parameters())):
        assert torch.equal(a, b)
    assert m1.c == m2.c


def test_bc_on_interventions_and_runner(person, data):
    model = train_bc(data, OBS, ACT, MileConfig(**SMALL), target="a_h", progress=False)
    s = Person.states(np.random.default_rng(5), 200)
    mu, _ = model.action_distribution(stack_frames(s, 4))
    assert np.abs(mu - np.tanh(s @ person.we.T)).mean() < 0.1
    assert model.c is None
    runner = model.runner()
    runner.reset()
    stepped = np.array([runner.step(row) for row in s[:6]])
    np.testing.assert_allclose(stepped, model.act(stack_frames(s[:6], 4)), atol=1e-6)


def test_discrete_actions_train():
    """A discrete simulated person: expert and mental-model logits known, probit interventions."""
    r = np.random.default_rng(0)
    obs, act = ObsSpec(["x", "y"], 2), ActionSpec(["left", "stay", "right"], "discrete", 3)

    def expert_logits(s):
        return np.stack([-4 * s[:, 0] - 2, 0 * s[:, 0], 4 * s[:, 0] - 2], -1)

    def mental_logits(s):
        return np.tile([-1.0, 1.0, -1.0], (len(s), 1))

    def sample(logits):
        return (logits + r.gumbel(size=logits.shape)).argmax(-1)

    def p_of(s, c):
        return mile.intervention_probability_discrete(
            torch.tensor(expert_logits(s)), torch.tensor(mental_logits(s)), c).numpy()
    probe = r.normal(size=(2000, 2))
    c = mile.estimate_c(0.25, probability_fn=lambda cc: p_of(probe, cc))
    eps = []
    for _ in range(15):
        s = r.normal(size=(40, 2))
        nu = r.uniform(size=40) < p_of(s, c)
        eps.append({"state": s, "a_r": sample(mental_logits(s)),
                    "a_h": np.where(nu, sample(expert_logits(s)), -1), "nu": nu})
    s = r.normal(size=(400, 2))
    x, best = stack_frames(s, 2), expert_logits(s).argmax(-1)
    p_true = p_of(s, c).mean()
    bc = train_bc(eps, obs, act, MileConfig(hidden=(32,), lr=3e-3), target="a_h", progress=False)
    bc_accuracy = (bc.act(x) == best).mean()
    # the paper's Eq. 3 loss: right where people intervened, calibrated intervention rate
    model, _ = train_mile(eps, obs, act, MileConfig(hidden=(32,), lr=3e-3, mental_anchor=0.0),
                          progress=False)
    moved = best != 1
    assert (model.act(x)[moved] == best[moved]).mean() > 0.85
    assert abs(model.intervention_probability(x).mean() - p_true) < 0.06
    # the joint form with the mental model anchored to a_r also learns from the ticks without
    # intervention (the expert's "stay" region, never labelled), which BC cannot
    model, _ = train_mile(eps, obs, act, MileConfig(hidden=(32,), lr=3e-3, form="joint",
                                                    mental_anchor=0.1), progress=False)
    accuracy = (model.act(x) == best).mean()
    assert accuracy > 0.75 and accuracy > bc_accuracy + 0.08, (accuracy, bc_accuracy)
    assert abs(model.intervention_probability(x).mean() - p_true) < 0.06


def test_image_observations():
    r = np.random.default_rng(0)
    obs = ObsSpec(["ee_x", "ee_y", "ee_z"], 1, image_shape=(64, 64, 3))
    t = 30
    eps = [{"state": r.normal(size=(t, 3)), "a_r": r.uniform(-1, 1, (t, 4)),
            "a_h": np.full((t, 4), np.nan), "nu": np.zeros(t, bool),
            "image": r.integers(0, 255, (t, 64, 64, 3), dtype=np.uint8)} for _ in range(2)]
    eps[0]["nu"][:5] = True
    eps[0]["a_h"][:5] = 0.5
    act = ActionSpec(["dx", "dy", "dz", "gripper"])
    model, _ = train_mile(eps, obs, act, MileConfig(hidden=(16,), min_updates=3, max_updates=3,
                                                    pretrain_updates=2, batch_size=16),
                          progress=False)
    a = model.act({"state": eps[0]["state"][0], "image": eps[0]["image"][0]})
    assert a.shape == (4,) and np.all(np.abs(a) <= 1)
    assert model.runner().step(eps[0]["state"][0], image=eps[0]["image"][0]).shape == (4,)
    with pytest.raises(ValueError, match="image"):
        model.act(eps[0]["state"][0])


def test_bad_inputs_name_the_problem(data):
    bad = [dict(data[0]), dict(data[1])]
    bad[1]["state"] = bad[1]["state"][:, :2]
    with pytest.raises(ValueError, match=r"episodes\[1\]\['state'\]"):
        train_mile(bad, OBS, ACT, progress=False)
    bad = [dict(data[0])]
    bad[0]["a_r"] = bad[0]["a_r"] * 5
    with pytest.raises(ValueError, match=r"episodes\[0\]\['a_r'\] has values outside"):
        train_mile(bad, OBS, ACT, progress=False)
    bad = [dict(data[0])]
    bad[0]["a_h"] = np.full_like(bad[0]["a_r"], np.nan)
    bad[0]["nu"] = np.ones(len(bad[0]["nu"]), bool)
    with pytest.raises(ValueError, match=r"a_h'\] must be a valid action"):
        train_mile(bad, OBS, ACT, progress=False)
    for field, value in [("lam", 1.5), ("beta", 0.0), ("form", "eq3"), ("c_update", "guess"),
                         ("holdout", 0.95), ("c", float("inf"))]:
        with pytest.raises(ValueError, match=f"MileConfig.{field}"):
            train_mile(data[:2], OBS, ACT, MileConfig(**{field: value}), progress=False)
    with pytest.raises(ValueError, match="target"):
        train_bc(data[:2], OBS, ACT, target="expert", progress=False)
    with pytest.raises(ValueError, match="action kind"):
        ActionSpec(["a"], "hybrid")


def test_continuation_ticks_known_answers():
    nu = np.array([1, 1, 0, 1, 1, 1, 0, 0, 1], bool)
    start = np.array([1, 0, 0, 0, 0, 1, 0, 0, 0], bool)   # a second episode starts at tick 5
    assert mile.continuation_ticks(nu, start).tolist() == [
        False, True, False, False, True, False, False, False, False]


def _fit(episodes, model, seed=3):
    cfg = MileConfig(**SMALL, seed=seed, max_updates=150, min_updates=150,
                     intervention_model=model)
    m, _ = train_mile(episodes, OBS, ACT, cfg, progress=False)
    return m


def test_temporal_model_is_the_per_tick_one_on_one_tick_takeovers(data):
    """Takeovers of one tick have no continuation ticks: both models fit the same weights."""
    one_tick = []
    for e in data[:12]:
        nu = e["nu"] & ~np.r_[False, e["nu"][:-1]]          # keep only each takeover's onset
        one_tick.append(dict(e, nu=nu, a_h=np.where(nu[:, None], e["a_h"], np.nan)))
    a, b = _fit(one_tick, "per_tick"), _fit(one_tick, "segments")
    for k, v in a.policy.state_dict().items():
        assert torch.equal(v, b.policy.state_dict()[k]), k
    assert a.c == b.c
    # with takeovers of several ticks the temporal model is another model
    long = [dict(e, nu=e["nu"] | np.r_[False, e["nu"][:-1]],
                 a_h=np.where((e["nu"] | np.r_[False, e["nu"][:-1]])[:, None],
                              np.nan_to_num(e["a_h"]), np.nan)) for e in data[:12]]
    c, d = _fit(long, "per_tick"), _fit(long, "segments")
    assert not torch.equal(c.policy.state_dict()["head.weight"],
                           d.policy.state_dict()["head.weight"])
    assert d.metrics["onsets"] < int(sum(e["nu"].sum() for e in long))


@pytest.mark.parametrize("name, value, words", [
    ("beta_update", "sometimes", "MileConfig.beta_update must be 'fixed' or 'learn'"),
    ("intervention_model", "hmm", "MileConfig.intervention_model must be 'per_tick' or"),
    ("min_updates", 2.5, "MileConfig.min_updates must be an integer"),
    ("nll_beta", 1.5, r"MileConfig.nll_beta must be in \[0, 1\]"),
    ("nll_beta", "half", r"MileConfig.nll_beta must be in \[0, 1\]"),
    ("ema", 1.0, r"MileConfig.ema must be in \[0, 1\)"),
    ("ema", -0.1, r"MileConfig.ema must be in \[0, 1\)"),
])
def test_bad_config_values_name_the_field(name, value, words):
    with pytest.raises(ValueError, match=words):
        MileConfig(**{name: value}).validate()


def _iterates(ema: float, updates: int = 30) -> tuple[list[np.ndarray], np.ndarray]:
    """Adam on a quadratic through the training loop: each update's weights and the final ones."""
    w = torch.nn.Linear(3, 1)
    seen = []

    def loss_fn(_idx):
        seen.append(w.weight.detach().clone().numpy())      # the weights before this update
        loss = ((w.weight - 5.0) ** 2).sum() + w.bias ** 2
        return loss.sum(), {"loss": float(loss.sum().detach())}

    torch.manual_seed(0)
    w.reset_parameters()
    loop = _Loop(loss_fn, [w], MileConfig(lr=0.1, ema=ema), torch.Generator().manual_seed(0))
    loop.run(np.arange(64), updates)
    return seen, w.weight.detach().numpy().copy()


def test_ema_ends_the_fit_with_the_average_of_the_iterates():
    seen, last = _iterates(0.0)
    _, averaged = _iterates(0.9)
    iterates = seen[1:] + [last]                  # the weights after updates 1 .. 30
    expect = seen[0].copy()
    for u, w in enumerate(iterates, start=1):
        d = min(0.9, (1 + u) / (10 + u))
        expect = d * expect + (1 - d) * w
    np.testing.assert_allclose(averaged, expect, rtol=1e-5, atol=1e-6)
    assert np.all(averaged < last - 0.05)         # behind the last iterate on the way to 5
