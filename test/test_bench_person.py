"""The simulated person: closed forms against Monte Carlo, and its rate and c calibration.

The empirical rate is checked against the probit mean, and c calibration hitting its target.
"""
import numpy as np
import pytest
from scipy.special import ndtr

from mile_ros.sim.experts import ExpertInfo, LunarLanderExpert, lunar_lander_scores
from mile_ros.sim.person import (
    ProbitStats,
    SimulatedPerson,
    calibrate_c,
    gaussian_kc,
    probit_gaussian,
)


class FixedMental:
    """A mental model whose distribution is a fixed function of the observation's first dims."""

    def __init__(self, kind, act_dim, scale=1.0):
        self.kind, self.act_dim, self.scale = kind, act_dim, scale

    def action_distribution(self, obs):
        o = np.atleast_2d(obs)[:, : self.act_dim]
        if self.kind == "discrete":
            return self.scale * o
        return np.tanh(o), np.full_like(o, np.log(0.2))


def _mc_gaussian(mu, ls, mu_h, ls_h, c, beta, n, rng):
    """Estimate P by sampling both a and a'.

    P = E_{a~pi}[Phi((E_{a'~pihat}[log pi(a) - log pi(a')] - c)/beta)].
    """
    sd, sd_h = np.exp(ls), np.exp(ls_h)

    def logp(a):
        return (-0.5 * ((a - mu) / sd) ** 2 - ls).sum(-1)
    a = mu + sd * rng.standard_normal((n, mu.size))
    a2 = mu_h + sd_h * rng.standard_normal((1_000_000, mu.size))
    inner = logp(a) - logp(a2).mean()
    return ndtr((inner - c) / beta).mean()


def test_gaussian_closed_form_matches_monte_carlo():
    rng = np.random.default_rng(0)
    mu, ls = np.array([0.3, -0.2, 0.1, 0.5]), np.log(np.array([0.1, 0.2, 0.15, 0.1]))
    mu_h, ls_h = np.array([0.1, 0.0, 0.3, 0.4]), np.log(np.array([0.2, 0.1, 0.1, 0.3]))
    kc = gaussian_kc(mu[None], ls[None], mu_h[None], ls_h[None])
    for c, beta in [(2.0, 1.0), (10.0, 3.0)]:
        closed = probit_gaussian(kc, 4, c, beta)[0]
        mc = _mc_gaussian(mu, ls, mu_h, ls_h, c, beta, 200_000, rng)
        assert abs(closed - mc) < 0.01, (c, beta, closed, mc)


def test_discrete_closed_form_matches_enumeration():
    rng = np.random.default_rng(1)
    e_logits, m_logits = rng.normal(size=4), rng.normal(size=4)
    logp = e_logits - np.log(np.exp(e_logits).sum())
    q = np.exp(m_logits) / np.exp(m_logits).sum()
    want = sum(np.exp(logp[a]) * ndtr((logp[a] - (q * logp).sum() - 0.3) / 0.7) for a in range(4))
    stats = ProbitStats([ExpertInfo(action=0, logits=e_logits)], m_logits[None])
    assert stats.p(0.3, 0.7)[0] == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_empirical_rate_matches_probit_mean(kind):
    rng = np.random.default_rng(2)
    obs = rng.normal(size=(400, 8))
    if kind == "continuous":
        infos = [ExpertInfo(action=np.tanh(o[4:8]), mean=np.tanh(o[4:8]),
                            log_std=np.full(4, np.log(0.1)))
                 for o in obs]
        mental = FixedMental(kind, 4)
    else:
        infos = [ExpertInfo(action=int(np.argmax(o[4:8])), logits=3 * o[4:8]) for o in obs]
        mental = FixedMental(kind, 4, scale=3.0)
    stats = ProbitStats(infos, mental.action_distribution(obs))
    c = calibrate_c(stats, 0.25)
    person = SimulatedPerson(None, mental, c, seed=3)
    p_model = stats.p(c)
    reps = 25
    counts = np.zeros(len(obs))
    for _ in range(reps):
        for i, (o, e) in enumerate(zip(obs, infos)):
            nu, a_h, p = person.decide(o, e)
            assert p == pytest.approx(p_model[i], abs=1e-5)  # float32 mental model input
            if nu:
                counts[i] += 1
                assert np.array_equal(np.asarray(a_h), np.asarray(e.action))  # the expert's action
            else:
                assert a_h is None
    n = reps * len(obs)
    se = np.sqrt(p_model.mean() * (1 - p_model.mean()) / n)
    assert abs(counts.sum() / n - p_model.mean()) < 4 * se


def _gaussian_stats(seed=4, n=300):
    """Probit statistics of a Gaussian expert (sigma 0.1) against a fixed mental model."""
    obs = np.random.default_rng(seed).normal(size=(n, 8))
    infos = [ExpertInfo(action=np.tanh(o[4:8]), mean=np.tanh(o[4:8]),
                        log_std=np.full(4, np.log(0.1))) for o in obs]
    return ProbitStats(infos, FixedMental("continuous", 4).action_distribution(obs))


@pytest.mark.parametrize("target", [0.05, 0.3, 0.6])
def test_calibration_hits_target(target):
    stats = _gaussian_stats()
    c = calibrate_c(stats, target, beta=2.0)
    assert stats.p(c, 2.0).mean() == pytest.approx(target, abs=1e-3)
    assert stats.p(c + 1.0, 2.0).mean() < target < stats.p(c - 1.0, 2.0).mean()  # monotone in c
    with pytest.raises(ValueError, match="target intervention rate"):
        calibrate_c(stats, 1.5)


def test_lunar_lander_expert_argmax_is_the_heuristic():
    from gymnasium.envs.box2d.lunar_lander import heuristic

    class Env:  # heuristic() only reads env.unwrapped.continuous
        continuous = False
        unwrapped = None
    env = Env()
    env.unwrapped = env
    rng = np.random.default_rng(5)
    expert = LunarLanderExpert(temperature=0.05)
    agree = 0
    for _ in range(500):
        s = np.r_[rng.normal(0, 0.5, 6), rng.random(2) < 0.1]
        e = expert(s)
        agree += e.action == heuristic(env, s)
        assert np.exp(e.logits).sum() == pytest.approx(1.0)
        assert int(np.argmax(e.logits)) == int(np.argmax(lunar_lander_scores(s)))
    assert agree >= 495  # only exact ties may differ


def test_person_agrees_with_the_learners_closed_forms():
    """Check that the person and the core's closed forms compute the same p(nu=1|s).

    The person: numpy, 128-point chi-square grid; the core's closed forms: mile_ros.learning.mile,
    which train_mile (the benchmark's MILE and the robot's) calls on its networks' outputs.
    """
    torch = pytest.importorskip("torch")
    core = pytest.importorskip("mile_ros.learning.mile")

    rng = np.random.default_rng(6)
    mu, mu_h = np.tanh(rng.normal(size=(50, 4))), np.tanh(rng.normal(size=(50, 4)))
    ls, ls_h = np.full((50, 4), np.log(0.2)), np.full((50, 4), np.log(0.3))
    c = 3.0
    want = core.intervention_probability_gaussian(
        *(torch.as_tensor(x) for x in (mu, ls, mu_h, ls_h)), c).numpy()
    person = probit_gaussian(gaussian_kc(mu, ls, mu_h, ls_h), 4, c)
    assert np.abs(person - want).max() < 2e-3

    pl, ml = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    want_d = core.intervention_probability_discrete(torch.as_tensor(pl), torch.as_tensor(ml),
                                                    0.4).numpy()
    stats = ProbitStats([ExpertInfo(action=0, logits=x) for x in pl], ml)
    assert np.abs(stats.p(0.4) - want_d).max() < 1e-9


@pytest.mark.parametrize("target", [0.1, 0.3])
def test_calibration_with_a_scale_that_grows_with_c(target):
    """Scale = max(beta, ratio * c): the calibrated person hits the rate and is not a threshold."""
    from mile_ros.sim.person import person_scale

    stats = _gaussian_stats()
    c = calibrate_c(stats, target, beta=1.0, beta_ratio=0.5)
    scale = person_scale(c, 1.0, 0.5)
    assert scale == pytest.approx(0.5 * abs(c)) and scale > 1.0
    p = stats.p(c, scale)
    assert p.mean() == pytest.approx(target, abs=1e-3)
    hard = stats.p(calibrate_c(stats, target, beta=1.0), 1.0)
    soft_share = np.mean((p > 0.01) & (p < 0.99))
    assert soft_share > np.mean((hard > 0.01) & (hard < 0.99)) + 0.2, soft_share


def test_person_samples_its_action_from_the_experts_gaussian():
    mental = FixedMental("continuous", 4)
    e = ExpertInfo(action=np.full(4, 0.2), mean=np.full(4, 0.2), log_std=np.full(4, np.log(0.1)))
    person = SimulatedPerson(None, mental, c=-1e3, seed=1, sample_actions=True)
    acts = np.array([person.decide(np.zeros(8), e)[1] for _ in range(2000)])
    assert np.abs(acts.mean(0) - 0.2).max() < 0.01
    assert np.abs(acts.std(0) - 0.1).max() < 0.01
    exact = SimulatedPerson(None, mental, c=-1e3, seed=1)
    assert np.array_equal(exact.decide(np.zeros(8), e)[1], e.action)


class ScriptedHazard:
    """A SegmentPerson whose hazard p(s) at tick t is a given sequence (known answers)."""

    @staticmethod
    def make(hazard, **kw):
        from mile_ros.sim.person import SegmentPerson

        class Person(SegmentPerson):
            def probability(self, stacked_obs, expert_info=None):
                return float(hazard[self.t])

        e = ExpertInfo(action=np.zeros(2), mean=np.zeros(2), log_std=np.full(2, np.log(0.1)))
        person = Person(None, FixedMental("continuous", 2), c=1.0, seed=0, **kw)

        def run(states=None):
            person.reseed(0)
            nu = []
            for t in range(len(hazard)):
                person.t = t
                obs = np.zeros(4) if states is None else states[t]
                nu.append(person.decide(obs, e)[0])
            return np.array(nu)
        return run


def _segments(nu):
    edges = np.diff(np.r_[0, nu.astype(int), 0])
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def test_segment_person_reacts_late_holds_and_hands_back_when_calm():
    hazard = np.r_[np.zeros(10), np.ones(3), np.zeros(30)]
    nu = ScriptedHazard.make(hazard, reaction_ticks=2, dwell_ticks=5, handback_p=0.1)()
    # fires at 10, takes over at 12, calm from 13, hands back after 5 calm ticks held >= 5
    assert _segments(nu) == [(12, 17)]
    assert not ScriptedHazard.make(np.zeros(40))().any()


def test_segment_person_takeovers_are_never_shorter_than_the_dwell_time():
    rng = np.random.default_rng(5)
    hazard = np.clip(rng.normal(0.1, 0.3, 600), 0, 1) * (rng.random(600) < 0.5)
    nu = ScriptedHazard.make(hazard, reaction_ticks=3, dwell_ticks=8, handback_p=0.2)()
    segs = _segments(nu)
    assert len(segs) >= 5
    for start, end in segs:
        assert end - start >= 8 or end == len(nu), (start, end)
        # it started no earlier than the reaction delay after a tick where the hazard was > 0
        assert hazard[start - 3] > 0


def test_segment_person_takes_over_a_robot_that_holds_still():
    hazard = np.zeros(60)
    states = np.minimum(np.arange(60), 20)[:, None] * np.full((1, 4), 0.01)  # still from 20
    kw = {"reaction_ticks": 2, "dwell_ticks": 5, "handback_p": 0.1}
    nu = ScriptedHazard.make(hazard, stall_ticks=10, stall_tol=0.003, **kw)(states)
    # still over ticks 20..30 -> fires at 30, takes over at 32, hands back after 5 calm ticks;
    # the robot holds still again for 10 ticks from 37 -> fires at 47, takes over at 49
    assert _segments(nu) == [(32, 37), (49, 54)]
    assert not ScriptedHazard.make(hazard, **kw)(states).any()          # off by default
    creeping = np.arange(60)[:, None] * np.full((1, 4), 0.004)          # 4 mm a tick: moving
    assert not ScriptedHazard.make(hazard, stall_ticks=10, **kw)(creeping).any()


def test_the_stall_trigger_leaves_the_hazards_random_stream_alone():
    rng = np.random.default_rng(7)
    hazard = np.clip(rng.normal(0.1, 0.3, 400), 0, 1) * (rng.random(400) < 0.5)
    moving = np.arange(400)[:, None] * np.ones((1, 4))
    kw = {"reaction_ticks": 3, "dwell_ticks": 8, "handback_p": 0.2}
    off = ScriptedHazard.make(hazard, **kw)(moving)
    assert off.any()
    assert np.array_equal(ScriptedHazard.make(hazard, stall_ticks=5, **kw)(moving), off)


def test_bad_person_settings_name_what_is_wrong():
    from mile_ros.sim.initial import InitialConfig, _person
    from mile_ros.sim.person import SegmentPerson

    mental = FixedMental("continuous", 2)
    with pytest.raises(ValueError, match="dwell_ticks >= 1"):
        SegmentPerson(None, mental, c=1.0, dwell_ticks=0)
    with pytest.raises(ValueError, match="0 < handback_p < 1"):
        SegmentPerson(None, mental, c=1.0, handback_p=1.5)
    with pytest.raises(ValueError, match="stall_ticks >= 0 and stall_tol > 0"):
        SegmentPerson(None, mental, c=1.0, stall_ticks=5, stall_tol=0.0)

    class Task:
        expert, obs_dim = None, 2
    with pytest.raises(ValueError, match="person must be 'segments' or 'paper', got 'nice'"):
        _person(Task(), mental, 1.0, InitialConfig(person="nice"), 0)
