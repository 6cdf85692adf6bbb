"""Takeover onsets in `mile-ros eval-interventions`: known-answer tests.

The onset events, onset AUC and log-likelihood, the expected calibration error and the
time-to-onset error on hand-written episodes, and on a synthetic person whose hazard of taking
over is known on every tick (fixed-length takeovers after each onset).
"""
import math

import numpy as np
import pytest

from mile_ros.evaluation import metrics, onsets, report

# one hand-written episode: takeovers at ticks 2-3 (handback at 4) and 6 (open at the end)
NU = np.array([0, 0, 1, 1, 0, 0, 1], bool)
P = np.array([0.1, 0.4, 0.6, 0.9, 0.2, 0.7, 0.8])


def test_events_of_a_hand_written_episode():
    assert onsets.risk_set(NU).tolist() == [1, 1, 1, 0, 0, 1, 1]
    assert np.flatnonzero(onsets.onsets(NU)).tolist() == [2, 6]
    assert np.flatnonzero(onsets.handbacks(NU)).tolist() == [4]
    assert onsets.takeover_segments(NU) == [(2, 4), (6, 7)]
    assert onsets.risk_set(np.ones(3, bool)).tolist() == [1, 0, 0]      # an onset at t = 0
    summary = onsets.takeover_summary([NU, np.array([0, 1, 1, 1, 0], bool)])
    assert summary["onsets"] == 3 and summary["handbacks"] == 2
    assert summary["risk_set_ticks"] == 5 + 2 and summary["open_at_episode_end"] == 1
    assert summary["onset_rate"] == pytest.approx(3 / 7)
    assert summary["segment_length_ticks"] == {"mean": 2.0, "median": 2.0, "min": 1.0,
                                               "max": 3.0}
    assert onsets.onset_rate([NU]) == pytest.approx(2 / 5)


def test_onset_auc_and_log_likelihood_of_a_hand_written_example():
    m = onsets.onset_metrics([NU], [P])
    # risk set ticks 0, 1, 2, 5, 6: labels 0, 0, 1, 0, 1 and p 0.1, 0.4, 0.6, 0.7, 0.8;
    # pairs (onset, no onset) ranked right: 0.6 > 0.1, 0.4 (not 0.7), 0.8 > all three: 5 of 6
    assert m["onset_auc"] == pytest.approx(5 / 6)
    assert m["onset_log_likelihood"] == pytest.approx(
        np.mean(np.log([0.9, 0.6, 0.6, 0.3, 0.8])))
    # bins: 0.1 (y 0), 0.4 (y 0), 0.6 (y 1), 0.7 (y 0), 0.8 (y 1), each 1/5 of the ticks
    assert m["onset_ece"] == pytest.approx((0.1 + 0.4 + 0.4 + 0.7 + 0.2) / 5)
    # per tick (all 7 ticks) the same p scores differently: the risk set matters
    assert metrics.roc_auc(NU, P) != pytest.approx(m["onset_auc"])
    none = onsets.onset_metrics([np.zeros(3, bool)], [np.full(3, 0.2)])    # no onset at all
    assert math.isnan(none["onset_auc"]) and math.isnan(none["time_to_onset_missed"])


def test_predictions_inside_a_takeover_do_not_change_the_onset_metrics():
    changed = P.copy()
    changed[[3, 4]] = [0.01, 0.99]          # after the onset at 2, and the handback tick
    a = onsets.onset_metrics([NU], [P], horizon=0)
    b = onsets.onset_metrics([NU], [changed], horizon=0)
    assert a == b
    assert metrics.roc_auc(NU, P) != metrics.roc_auc(NU, changed)     # the change is real
    # a change on a risk-set tick does change them
    on_risk = P.copy()
    on_risk[5] = 0.05
    assert onsets.onset_metrics([NU], [on_risk])["onset_auc"] == pytest.approx(1.0)


def test_time_to_onset_error_of_hand_written_episodes():
    # onset at 2: p >= 0.5 first at 2 (error 0); onset at 6: its run starts at 5, p[5] = 0.7
    assert onsets.time_to_onset_errors(NU, P).tolist() == [0.0, -1.0]
    late_nu, late_p = np.array([0, 1, 1, 1, 0], bool), np.array([0.1, 0.2, 0.3, 0.9, 0.1])
    assert onsets.time_to_onset_errors(late_nu, late_p).tolist() == [2.0]   # 2 ticks late
    assert math.isnan(onsets.time_to_onset_errors(late_nu, late_p, horizon=1)[0])   # too late
    # p above the threshold before the previous handback does not predict the next onset:
    # onset at 1 predicted at 0 (-1); the run of the onset at 5 starts at 4, p stays low there
    runs = onsets.time_to_onset_errors(np.array([0, 1, 1, 0, 0, 1], bool),
                                       np.array([0.9, 0.9, 0.9, 0.9, 0.1, 0.2]))
    assert runs[0] == -1.0 and math.isnan(runs[1])
    assert onsets.time_to_onset_errors(NU, P, threshold=0.75).tolist() == [1.0, 0.0]
    m = onsets.onset_metrics([NU, np.array([0, 1, 1], bool)], [P, np.array([0.2, 0.3, 0.4])])
    assert m["time_to_onset_mae"] == pytest.approx(0.5)      # |0| and |-1|; the third missed
    assert m["time_to_onset_missed"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="horizon"):
        onsets.time_to_onset_errors(NU, P, horizon=-1)


# --- a synthetic person whose hazard is known -------------------------------------------------
SEGMENT = 5


def synthetic_person(n_episodes=200, T=100, seed=0):
    """Make episodes (nu, hazard) of a person with a known onset hazard.

    The state is an AR(1) process; on a robot-controlled tick the person takes over with
    probability hazard = sigmoid(2 x - 3), then keeps control for SEGMENT ticks and hands back
    (the risk set, t = 0 or nu_{t-1} = 0, is exactly the ticks where it decides on an onset).
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_episodes):
        x = np.zeros(T)
        for t in range(1, T):
            x[t] = 0.9 * x[t - 1] + rng.normal(0, 0.6)
        hazard = 1 / (1 + np.exp(-(2 * x - 3)))
        nu, t = np.zeros(T, bool), 0
        while t < T:
            if rng.random() < hazard[t]:
                nu[t:t + SEGMENT] = True
                t += SEGMENT + 1            # the handback tick is the robot's, not a decision
            else:
                t += 1
        out.append((nu, hazard))
    return out


@pytest.fixture(scope="module")
def person():
    return synthetic_person()


def test_the_true_hazard_beats_a_constant_on_a_synthetic_person(person):
    nu, hazard = [e[0] for e in person], [e[1] for e in person]
    rate = onsets.onset_rate(nu)
    truth = onsets.onset_metrics(nu, hazard)
    constant = onsets.onset_metrics(nu, [np.full(len(y), rate) for y in nu])
    assert constant["onset_auc"] == 0.5
    assert truth["onset_auc"] > 0.75
    assert truth["onset_log_likelihood"] > constant["onset_log_likelihood"] + 0.05
    assert constant["onset_log_likelihood"] == pytest.approx(
        rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
    assert truth["onset_ece"] < 0.03                          # the hazard is calibrated
    assert constant["time_to_onset_missed"] == 1.0            # rate < 0.5: never crosses
    # garbage on the ticks inside the takeovers changes none of the onset metrics (horizon 0)
    rng = np.random.default_rng(1)
    garbage = [np.where(onsets.risk_set(y), h, rng.random(len(y))) for y, h in zip(nu, hazard)]
    assert onsets.onset_metrics(nu, garbage, horizon=0) == onsets.onset_metrics(nu, hazard,
                                                                                horizon=0)
    y_all = np.concatenate(nu)
    assert metrics.roc_auc(y_all, np.concatenate(garbage)) != metrics.roc_auc(
        y_all, np.concatenate(hazard))


def test_evaluate_reports_onsets_with_intervals_on_the_synthetic_person(person):
    nu, hazard = [e[0] for e in person[:60]], [e[1] for e in person[:60]]
    rate, o_rate = float(np.mean(np.concatenate(nu))), onsets.onset_rate(nu)
    constant = [np.full(len(y), rate) for y in nu]
    rep = report.evaluate(nu, {"mile": hazard, "majority": constant}, n_bootstrap=200, seed=0,
                          onset_predictions={"majority": [np.full(len(y), o_rate) for y in nu]})
    mile, majority = rep["estimators"]["mile"], rep["estimators"]["majority"]
    direct = onsets.onset_metrics(nu, hazard)
    for metric in onsets.ONSET_METRICS:
        assert mile[metric]["value"] == pytest.approx(direct[metric]), metric
    for metric in ("onset_auc", "onset_log_likelihood", "time_to_onset_mae", "ece"):
        lo, hi = mile[metric]["ci"]
        assert lo <= mile[metric]["value"] <= hi and lo < hi, metric
    # the majority estimator is scored on the onsets by its onset p, per tick by its rate
    assert majority["onset_log_likelihood"]["value"] == pytest.approx(
        o_rate * math.log(o_rate) + (1 - o_rate) * math.log(1 - o_rate))
    assert majority["log_likelihood"]["value"] == pytest.approx(
        metrics.log_likelihood(np.concatenate(nu), np.concatenate(constant)))
    d = rep["differences"]["mile - majority"]["onset_auc"]
    assert d["value"] > 0.25 and d["ci"][0] > 0
    t = rep["takeovers"]
    assert t["segment_length_ticks"]["max"] == SEGMENT == t["segment_length_ticks"]["median"]
    assert t["onsets"] == sum(int(onsets.onsets(y).sum()) for y in nu)
    assert t["handbacks"] == t["onsets"] - t["open_at_episode_end"]
    assert rep["onsets"] == {"threshold": 0.5, "horizon_ticks": onsets.HORIZON}
    table = report.format_table(rep)
    for needle in ("onset_auc (+)", "time_to_onset_missed (-)", "ece (-)", "takeovers: ",
                   "mile - majority: onset_auc"):
        assert needle in table, needle


def test_timeline_shades_the_persons_control_and_marks_the_onsets():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mile_ros.evaluation import plots

    fig, ax = plt.subplots()
    plots._plot_timeline(ax, 0, {"nu": NU, "name": "hand"}, {"mile": [P]}, max_ticks=200)
    spans = [(p.get_x(), p.get_x() + p.get_width()) for p in ax.patches]   # one per takeover
    assert spans == [(1.5, 3.5), (5.5, 6.5)]
    marks = [line for line in ax.get_lines() if line.get_marker() == "v"]
    assert len(marks) == 1 and marks[0].get_xdata().tolist() == [2, 6]
    hazard = [line for line in ax.get_lines() if line.get_label() == "mile"]
    assert hazard[0].get_ydata().tolist() == P.tolist()
    assert "2 takeovers" in ax.get_title(loc="left")
    plt.close(fig)
