"""`mile-ros eval-interventions`: metrics, bootstrap, estimators, report and errors.

Metrics with known answers, episode bootstrap, estimators, the report on a simulated probit
person, and clear errors for bad input.
"""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mile_ros.evaluation import EvalError, estimators, metrics, onsets, report
from mile_ros.sim.person import gaussian_kc, probit_gaussian
from mile_ros.tools import eval_interventions as ev

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


# --- metrics: known answers -------------------------------------------------------------------
def labels(n=400, rate=0.25, seed=0):
    return np.random.default_rng(seed).random(n) < rate


def test_perfect_predictor_scores_auc_and_ap_one():
    y = labels()
    for p in (y.astype(float), 0.4 + 0.2 * y + 0.01 * np.random.default_rng(1).random(len(y))):
        m = metrics.compute_metrics(y, p)
        assert m["roc_auc"] == 1.0 and m["average_precision"] == 1.0
    m = metrics.compute_metrics(y, y.astype(float))
    assert m["accuracy"] == 1.0 and m["balanced_accuracy"] == 1.0 and m["brier"] == 0.0
    assert m["log_likelihood"] == pytest.approx(math.log1p(-metrics.EPS))
    # the exact opposite ranks every pair wrong
    assert metrics.roc_auc(y, 1.0 - y) == 0.0


def test_constant_predictor_scores_auc_one_half_and_ap_the_rate():
    y = labels(seed=2)
    m = metrics.compute_metrics(y, np.full(len(y), 0.3))
    assert m["roc_auc"] == 0.5
    assert m["average_precision"] == pytest.approx(y.mean())
    assert m["balanced_accuracy"] == 0.5
    r = 0.3
    rate = y.mean()
    assert m["log_likelihood"] == pytest.approx(rate * math.log(r) + (1 - rate) * math.log(1 - r))
    assert m["brier"] == pytest.approx(np.mean((r - y) ** 2))


def test_auc_equals_the_pairwise_probability_with_ties():
    rng = np.random.default_rng(3)
    y = rng.random(300) < 0.3
    p = np.round(rng.random(300) * 0.5 + 0.3 * y, 1)        # many ties
    pos, neg = p[y][:, None], p[~y][None, :]
    pairwise = np.mean((pos > neg) + 0.5 * (pos == neg))
    assert metrics.roc_auc(y, p) == pytest.approx(pairwise, abs=1e-12)
    fpr, tpr = metrics.roc_curve(y, p)
    assert np.trapezoid(tpr, fpr) == pytest.approx(pairwise, abs=1e-12)   # curve agrees


def test_small_hand_computed_cases():
    y = np.array([1, 0, 1, 0], bool)
    p = np.array([0.9, 0.8, 0.7, 0.1])
    # thresholds 0.9, 0.8, 0.7, 0.1: (P, R) = (1, .5), (.5, .5), (2/3, 1), (.5, 1)
    assert metrics.average_precision(y, p) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert metrics.roc_auc(y, p) == pytest.approx(0.75)
    assert metrics.accuracy(y, p) == pytest.approx(0.75)              # labels 1, 1, 1, 0
    assert metrics.balanced_accuracy(y, p) == pytest.approx(0.5 * (1.0 + 0.5))
    assert metrics.log_likelihood(y, p) == pytest.approx(np.mean(np.log([0.9, 0.2, 0.7, 0.9])))
    assert metrics.brier(y, p) == pytest.approx(np.mean([0.01, 0.64, 0.09, 0.01]))
    assert math.isnan(metrics.roc_auc(np.zeros(5, bool), np.ones(5)))   # undefined, not a crash
    assert math.isnan(metrics.average_precision(np.zeros(5, bool), np.ones(5)))


def test_majority_accuracy_equals_the_no_intervention_rate():
    train = [{"nu": labels(50, 0.2, s)} for s in range(8)]
    test = [{"nu": labels(40, 0.3, 100 + s)} for s in range(6)]
    rate = float(np.mean(np.concatenate([e["nu"] for e in train])))
    majority = estimators.MajorityEstimator(rate).predict(test)
    rep = report.evaluate([e["nu"] for e in test], {"majority": majority}, n_bootstrap=50)
    y = np.concatenate([e["nu"] for e in test])
    m = rep["estimators"]["majority"]
    assert m["accuracy"]["value"] == pytest.approx(1 - y.mean())
    assert m["balanced_accuracy"]["value"] == 0.5 and m["roc_auc"]["value"] == 0.5
    assert all(np.all(q == rate) for q in majority)


def test_expected_calibration_error_known_answers():
    # bin [0, 0.1): 2 ticks, nu rate 1/2 vs p 0.05; bin [0.9, 1]: 2 ticks, rate 1 vs p 0.95
    y = np.array([0, 1, 1, 1], bool)
    assert metrics.expected_calibration_error(y, [0.05, 0.05, 0.95, 0.95]) == pytest.approx(
        0.5 * 0.45 + 0.5 * 0.05)
    assert metrics.expected_calibration_error(y, [0.0, 0.0, 1.0, 1.0]) == pytest.approx(0.25)
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 0.8, 40_000)
    nu = rng.random(len(p)) < p
    assert metrics.expected_calibration_error(nu, p) < 0.03               # calibrated
    assert metrics.expected_calibration_error(nu, p + 0.2) == pytest.approx(0.2, abs=0.02)
    assert math.isnan(metrics.expected_calibration_error([], []))


def test_rate_error_is_the_predicted_rates_distance_from_the_observed():
    y = np.array([0, 0, 0, 1], bool)                        # observed rate 0.25
    assert metrics.rate_error(y, [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.25)
    assert metrics.rate_error(y, [0.0, 0.0, 0.0, 1.0]) == pytest.approx(0.0)
    assert metrics.rate_error(y, [0.1, 0.1, 0.1, 0.1]) == pytest.approx(0.15)  # under, too
    assert math.isnan(metrics.rate_error([], []))


# --- bootstrap over episodes ------------------------------------------------------------------
def episodes_with_predictions(n_eps, seed=0, T=40):
    """Make episodes whose intervention probability differs per episode and per tick.

    Also a noisy predictor of it.
    """
    rng = np.random.default_rng(seed)
    nu, pred = [], []
    for _ in range(n_eps):
        level = rng.uniform(-2.5, 0.0)
        logit = level + np.sin(np.arange(T) / 4 + rng.uniform(0, 6))
        p = 1 / (1 + np.exp(-logit))
        nu.append(rng.random(T) < p)
        pred.append(np.clip(p + rng.normal(0, 0.05, T), 0.01, 0.99))
    return nu, pred


def width(ci):
    return ci[1] - ci[0]


def test_bootstrap_intervals_contain_the_point_estimate_and_shrink_with_more_episodes():
    results = {}
    for n_eps in (10, 90):
        nu, pred = episodes_with_predictions(n_eps, seed=n_eps)
        rate = float(np.mean(np.concatenate(nu)))
        rep = report.evaluate(nu, {"mile": pred, "majority": [np.full(len(y), rate) for y in nu]},
                          n_bootstrap=300, seed=1)
        for name, by_metric in rep["estimators"].items():
            for metric, m in by_metric.items():
                if metric.endswith("ece") and (m["value"] or 0.0) < 1e-9:
                    continue    # the evaluation set's own rate: ECE at its floor 0, resamples > 0
                if metric == "rate_error":
                    continue    # |mean p - mean nu| near its floor 0: resamples lie above it
                if m["value"] is not None and m["ci"] is not None:
                    assert m["ci"][0] <= m["value"] <= m["ci"][1], (n_eps, name, metric, m)
        d = rep["differences"]["mile - majority"]["log_likelihood"]
        assert d["ci"][0] <= d["value"] <= d["ci"][1]
        results[n_eps] = rep["estimators"]["mile"]
    for metric in ("roc_auc", "log_likelihood", "brier", "accuracy"):
        w_small, w_large = width(results[10][metric]["ci"]), width(results[90][metric]["ci"])
        assert w_large < 0.6 * w_small, (metric, w_small, w_large)   # ~1/3 expected


def test_bootstrap_resamples_whole_episodes_and_is_deterministic():
    # 20 episodes of 50 ticks, each all-intervened or not: ticks within an episode are perfectly
    # correlated, so the interval must reflect 20 units, not 1000 ticks.
    nu = [np.full(50, i % 2 == 0) for i in range(20)]
    pred = {"majority": [np.full(50, 0.4) for _ in nu]}
    a = report.evaluate(nu, pred, n_bootstrap=400, seed=7)
    b = report.evaluate(nu, pred, n_bootstrap=400, seed=7)
    assert a == b
    ci = a["estimators"]["majority"]["accuracy"]["ci"]
    tick_level_width = 2 * 1.96 * math.sqrt(0.25 / 1000)          # ~0.06
    assert width(ci) > 4 * tick_level_width
    assert a["bootstrap"]["unit"] == "episode"


def test_evaluate_rejects_mismatched_predictions():
    nu = [np.zeros(5, bool), np.ones(3, bool)]
    with pytest.raises(ValueError, match="episode 1 has 4 predictions for 3 ticks"):
        report.evaluate(nu, {"x": [np.zeros(5), np.zeros(4)]}, n_bootstrap=0)
    with pytest.raises(EvalError, match="no episodes"):
        report.evaluate([], {"x": []}, n_bootstrap=0)


def test_classifier_is_deterministic_and_learns_a_state_dependent_rate():
    rng = np.random.default_rng(0)
    eps = []
    for _ in range(30):
        s = rng.uniform(-1, 1, (40, 2))
        eps.append({"state": s, "nu": rng.random(40) < np.where(s[:, 0] > 0, 0.6, 0.05)})
    cfg = estimators.ClassifierConfig(frame_stack=1, max_steps=300, seed=3)
    p1 = estimators.NeuralClassifier(cfg).fit(eps[:20]).predict(eps[20:])
    p2 = estimators.NeuralClassifier(cfg).fit(eps[:20]).predict(eps[20:])
    assert all(np.array_equal(a, b) for a, b in zip(p1, p2))
    y = np.concatenate([e["nu"] for e in eps[20:]])
    assert metrics.roc_auc(y, np.concatenate(p1)) > 0.75


# --- a simulated probit person, generated directly as arrays ------------------------------------
STATE_NAMES = ["x", "y", "gx", "gy"]
ACTION_NAMES = ["vx", "vy"]
SIGMA_EXPERT, SIGMA_MENTAL, STEP = 0.5, 0.4, 0.1


def expert_mean(s):
    return np.clip((s[..., 2:4] - s[..., 0:2]) / 0.25, -1, 1)


def robot_mean(s):
    """Return the robot's policy's mean, which is also the person's mental model of it.

    That is: the expert's action plus a bias that grows with x + gx (good on the left, poor on
    the right).
    """
    b = 0.9 * np.clip(0.5 * (s[..., 0] + s[..., 2]) + 0.5, 0, 1)
    return np.clip(expert_mean(s) + np.stack([b, -b], -1), -1, 1)


def person_p(s, c):
    """Return the person's p(nu=1|s) (the Gaussian closed form of mile_ros.learning.mile).

    With the expert as pi and the robot's policy as the mental model.
    """
    s = np.atleast_2d(s)
    kc = gaussian_kc(expert_mean(s), np.full((len(s), 2), np.log(SIGMA_EXPERT)),
                     robot_mean(s), np.full((len(s), 2), np.log(SIGMA_MENTAL)))
    return probit_gaussian(kc, 2, c)


def calibrated_c(rate=0.25, seed=99):
    s = np.random.default_rng(seed).uniform(-1, 1, (4000, 4))
    lo, hi = -50.0, 50.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if person_p(s, mid).mean() > rate else (lo, mid)
    return 0.5 * (lo + hi)


def person_episodes(n, seed, c, T=30, sample_action=True):
    """Make episodes (state, a_r, a_h, nu, true_p) of the robot with the simulated person.

    The person's action is drawn from their policy N(expert mean, SIGMA_EXPERT^2) as the model
    assumes (sample_action=False: the expert's mean, as the benchmark's person does).
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s = rng.uniform(-1, 1, 4)
        rows = {k: [] for k in ("state", "a_r", "a_h", "nu", "true_p")}
        for _t in range(T):
            p = float(person_p(s, c)[0])
            nu = bool(rng.random() < p)
            a_r = np.clip(robot_mean(s) + rng.normal(0, 0.05, 2), -1, 1)
            a_h = np.full(2, np.nan)
            if nu:
                noise = rng.normal(0, SIGMA_EXPERT, 2) if sample_action else 0.0
                a_h = np.clip(expert_mean(s) + noise, -1, 1)
            for k, v in zip(rows, (s.copy(), a_r, a_h, nu, p)):
                rows[k].append(v)
            s[:2] = np.clip(s[:2] + STEP * (a_h if nu else a_r), -1.5, 1.5)
        out.append({k: np.array(v) for k, v in rows.items()})
    return out


@pytest.fixture(scope="module")
def person_data():
    c = calibrated_c(0.15)                      # ~25% of the ticks intervened in the episodes
    return {"c": c, "train": person_episodes(60, 1, c), "eval": person_episodes(24, 2, c)}


@pytest.fixture(scope="module")
def mile_model(person_data):
    from mile_ros.learning import ActionSpec, MileConfig, ObsSpec, train_mile

    torch.manual_seed(0)
    model, _ = train_mile([{k: e[k] for k in ("state", "a_r", "a_h", "nu")}
                           for e in person_data["train"]],
                          ObsSpec(STATE_NAMES, frame_stack=4),
                          ActionSpec(ACTION_NAMES, kind="continuous"),
                          MileConfig(seed=0, hidden=(64, 64)), progress=False)
    return model


def test_report_on_a_simulated_person_puts_mile_above_majority(person_data, mile_model, tmp_path):
    evals = [dict(e, name=f"episode_{i}") for i, e in enumerate(person_data["eval"])]
    rep = report.run(mile_model, evals, person_data["train"], [e["true_p"] for e in evals],
                 n_bootstrap=200, seed=0, out=tmp_path / "report",
                 classifier_config=estimators.ClassifierConfig(max_steps=1500, seed=0))
    est = rep["estimators"]
    assert set(est) == {"mile", "classifier", "majority", "oracle"}
    ll = {n: est[n]["log_likelihood"]["value"] for n in est}
    assert ll["mile"] > ll["majority"], ll
    assert rep["differences"]["mile - majority"]["log_likelihood"]["ci"][0] > 0  # over episodes
    assert ll["oracle"] >= ll["mile"] - 0.02     # the truth is (about) the ceiling
    assert est["mile"]["roc_auc"]["value"] > 0.7
    truth = rep["truth"]
    assert truth["truth_pearson"]["value"] > 0.6 and truth["truth_mae"]["value"] < 0.2, truth
    assert rep["majority"]["label"] == "no intervention"
    # the majority estimator never predicts an intervention: its accuracy is the nu=0 rate
    y = np.concatenate([e["nu"] for e in evals])
    assert est["majority"]["accuracy"]["value"] == pytest.approx(1 - y.mean())
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["estimators"]["mile"]["log_likelihood"]["value"] == pytest.approx(ll["mile"])
    for name in ("roc.png", "calibration.png", "timelines.png", "truth.png"):
        data = (tmp_path / "report" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name


# --- the command on bags ------------------------------------------------------------------------
T0, DT = 1_700_000_000_000_000_000, 50_000_000


def write_bags(root: Path, episodes, iteration: int, state_names=STATE_NAMES, first_index=0):
    """One bag per episode under root/iter<N>/ (the recorder's layout); returns the true-p rows."""
    from mile_ros import bags
    from mile_ros.interfaces import FLAG_NAMES

    T = bags.typestore().types
    empty = np.array([], dtype=np.float64)

    def vec(names, values, ns):
        header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](
            sec=ns // 10**9, nanosec=ns % 10**9), frame_id="")
        return T["sensor_msgs/msg/JointState"](header=header, name=list(names),
                                               position=np.asarray(values, float), velocity=empty,
                                               effort=empty)
    rows = []
    for j, ep in enumerate(episodes):
        index = first_index + j
        t0 = T0 + index * 10**11
        path = root / f"iter{iteration}" / f"episode_{index:03d}"
        with bags.EpisodeBagWriter(path, record_images=False) as w:
            for k in range(len(ep["nu"])):
                s = t0 + k * DT
                w.write("observation", vec(state_names, ep["state"][k][:len(state_names)], s), s)
                w.write("action_robot", vec(ACTION_NAMES, ep["a_r"][k], s), s)
                w.write("intervention", vec(FLAG_NAMES, [float(ep["nu"][k]), 0, 0], s), s)
                if ep["nu"][k]:
                    w.write("action_human", vec(ACTION_NAMES, ep["a_h"][k], s), s)
                rows.append({"stamp_ns": s, "p": float(ep["true_p"][k])})
            w.close({"episode": index})
    return rows


@pytest.fixture(scope="module")
def bag_run(person_data, mile_model, tmp_path_factory):
    from mile_ros.learning.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("run")
    write_bags(root, person_data["train"][:12], 1)
    rows = write_bags(root, person_data["eval"][:8], 2, first_index=100)
    (root / "true_p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    save_checkpoint(mile_model, root / "ckpt")
    ckpt = next(p for p in (root / "ckpt").rglob("manifest.json")).parent
    return root, ckpt


def test_command_on_bags_writes_table_report_and_plots(bag_run, person_data, mile_model, capsys):
    root, ckpt = bag_run
    out = root / "report"
    rc = ev.main(["--model", str(ckpt), "--bags", str(root / "iter2"), "--train-bags",
                  str(root / "iter1"), "--out", str(out), "--bootstrap", "100",
                  "--true-p", str(root / "true_p.jsonl")])
    printed = capsys.readouterr().out
    assert rc == 0
    for needle in ("log_likelihood", "mile - majority", "MILE vs the true p"):
        assert needle in printed
    rep = json.loads((out / "report.json").read_text())
    assert rep["episodes"] == 8 and rep["ticks"] == 8 * 30
    assert rep["majority"]["rate_source"] == "training bags"
    assert rep["classifier"]["class_balanced"] is False
    # the bag path gives MILE exactly the probabilities of the array path
    evals = person_data["eval"][:8]
    p_arrays = np.concatenate(estimators.mile_predict(mile_model, evals))
    expected = metrics.log_likelihood(np.concatenate([e["nu"] for e in evals]), p_arrays)
    assert (rep["estimators"]["mile"]["log_likelihood"]["value"]
            == pytest.approx(expected, abs=1e-6))
    assert rep["truth"]["ticks_with_truth"] == 240
    # the onset metrics and calibration of every estimator, and the observed takeovers
    onset_keys = ("ece", "onset_auc", "onset_log_likelihood", "onset_ece", "time_to_onset_mae",
                  "time_to_onset_missed")
    for name in ("mile", "classifier", "majority", "oracle"):
        assert all(k in rep["estimators"][name] for k in onset_keys), name
        assert rep["estimators"][name]["ece"]["ci"] is not None, name
    nu_eval = [e["nu"] for e in evals]
    expected = onsets.onset_metrics(nu_eval, estimators.mile_predict(mile_model, evals))
    for k in ("onset_auc", "onset_log_likelihood", "time_to_onset_missed"):
        assert rep["estimators"]["mile"][k]["value"] == pytest.approx(expected[k], abs=1e-6), k
    assert rep["takeovers"] == json.loads(json.dumps(onsets.takeover_summary(nu_eval)))
    assert rep["majority"]["onset_p"] == pytest.approx(
        onsets.onset_rate([e["nu"] for e in person_data["train"][:12]]))
    assert rep["onsets"]["horizon_ticks"] == onsets.HORIZON
    assert "onset_auc" in printed and "takeovers: " in printed
    assert sorted(p.name for p in out.glob("*.png")) == ["calibration.png", "roc.png",
                                                        "timelines.png", "truth.png"]


def run_cli(*args):
    """Run the installed entry point's path (`mile-ros eval-interventions`) in a subprocess."""
    proc = subprocess.run([sys.executable, "-m", "mile_ros.cli", "eval-interventions",
                           *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stderr


def test_bad_inputs_give_clear_errors_without_traceback(bag_run, tmp_path, capsys):
    root, ckpt = bag_run
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt_ckpt"
    corrupt.mkdir()
    for f in ckpt.iterdir():                       # a checkpoint whose weights are cut short
        data = f.read_bytes()
        (corrupt / f.name).write_bytes(data if f.name == "manifest.json"
                                       else data[:len(data) // 3])
    three_dims = tmp_path / "three"
    write_bags(three_dims, [{"state": np.zeros((5, 4)), "a_r": np.zeros((5, 2)),
                             "a_h": np.full((5, 2), np.nan), "nu": np.zeros(5, bool),
                             "true_p": np.zeros(5)}], 1, state_names=["q0", "q1", "q2"])
    cases = [
        (["--model", ckpt, "--bags", tmp_path / "nowhere"],
         ["--bags", "nowhere", "does not exist"]),
        (["--model", ckpt, "--bags", empty], ["--bags", "empty", "no episode bags"]),
        (["--model", tmp_path / "missing_ckpt", "--bags", root / "iter2"],
         ["--model", "missing_ckpt"]),
        (["--model", corrupt, "--bags", root / "iter2"], ["--model", "corrupt_ckpt"]),
        (["--model", ckpt, "--bags", three_dims / "iter1"], ["--bags", "checkpoint", "q0"]),
        (["--model", ckpt, "--bags", root / "iter2", "--train-bags", root / "iter2"],
         ["share"]),
        (["--model", ckpt, "--bags", root / "iter2", "--true-p", tmp_path / "nope.jsonl"],
         ["--true-p", "nope.jsonl"]),
        (["--model", ckpt, "--bags", root / "iter2", "--onset-horizon", "-1"],
         ["--onset-horizon", "-1"]),
    ]
    for args, needles in cases:
        rc = ev.main([str(a) for a in args] + ["--out", str(tmp_path / "r"), "--bootstrap", "0"])
        err = capsys.readouterr().err
        assert rc != 0, args
        assert "Traceback" not in err
        for needle in needles:
            assert needle in err, (needle, err)
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    rc = ev.main(["--model", str(ckpt), "--bags", str(root / "iter2"), "--out", str(a_file / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "--out" in err and "a_file" in err and "Traceback" not in err
    # through the `mile-ros` command, in a fresh process: exit status and message, no traceback
    rc, err = run_cli("--model", corrupt, "--bags", root / "iter2", "--out", tmp_path / "r")
    assert rc == 2 and "corrupt_ckpt" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_:                # argparse: --model is required
        ev.main(["--bags", str(root / "iter2")])
    assert exit_.value.code == 2 and "--model" in capsys.readouterr().err
