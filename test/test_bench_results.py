"""Results file round trip and resume; clear errors for bad task / method names."""
import json

import pytest

from mile_ros.benchmark import cli
from mile_ros.benchmark.protocols import METHODS, parse_methods
from mile_ros.benchmark.results import (
    Results,
    ResultsError,
    curves,
    load_results,
    mean_se,
    summary_table,
)
from mile_ros.sim.tasks import UnknownNameError, canonical_task_name, valid_task_names


def test_results_round_trip_and_resume(tmp_path):
    path = tmp_path / "r.json"
    config = {"task": "toy/reach", "methods": ["mile", "iwr"], "seeds": [0, 1]}
    r = Results.open(path, config)
    for seed, rates in ((0, (0.2, 0.6)), (1, (0.4, 0.8))):
        for it, rate in enumerate(rates):
            r.add_record("mile", seed, {"iteration": it, "success_rate": rate,
                                        "interventions": 10 * it, "interventions_total": 10 * it})
    r.add_record("mile", 0, {"iteration": 1, "success_rate": 0.5, "interventions": 10,
                             "interventions_total": 10})
    data = load_results(path)
    assert data["config"] == config
    # replaced, sorted
    assert [rec["success_rate"] for rec in data["methods"]["mile"]["0"]] == [0.2, 0.5]
    again = Results.open(path, config)  # resume: same content
    assert again.data == data
    assert again.records("mile", 1)[1]["success_rate"] == 0.8
    m, se = curves(data)["mile"][1][:2]
    assert m == pytest.approx(0.65) and se == pytest.approx(0.15)
    assert "0.650 ± 0.150" in summary_table(data)
    with pytest.raises(ResultsError, match="different configuration.*seeds"):
        Results.open(path, {**config, "seeds": [0]})
    assert Results.open(path, {**config, "seeds": [0]}, resume=False).data["methods"] == {}


def test_more_iterations_or_methods_extend_a_run(tmp_path):
    path = tmp_path / "r.json"
    config = {"task": "toy/reach", "methods": ["mile", "iwr"], "iterations": 10, "seeds": [0]}
    Results.open(path, config).add_record("iwr", 0, {"iteration": 10, "success_rate": 0.5})
    longer = {**config, "methods": ["mile", "iwr", "rlif"], "iterations": 20}
    r = Results.open(path, longer)
    assert r.records("iwr", 0)[0]["success_rate"] == 0.5 and r.data["config"] == longer
    r.save()
    with pytest.raises(ResultsError, match="iterations"):  # fewer iterations: not an extension
        Results.open(path, {**longer, "iterations": 5})
    with pytest.raises(ResultsError, match="methods"):     # a method dropped
        Results.open(path, {**longer, "methods": ["mile"]})
    assert Results.open(path, {**longer, "seeds": [0, 1]}).data["config"]["seeds"] == [0, 1]
    with pytest.raises(ResultsError, match="iterations, seeds"):  # seed 0 dropped
        Results.open(path, {**longer, "iterations": 30, "seeds": [1]})
    with pytest.raises(ResultsError, match="task"):
        Results.open(path, {**longer, "task": "lunarlander"})


def test_load_rejects_foreign_files(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ResultsError, match="not a mile_ros bench results file"):
        load_results(p)
    p.write_text("{trunc")
    with pytest.raises(ResultsError, match="cannot read"):
        load_results(p)


def test_mean_se():
    assert mean_se([1.0, 3.0]) == pytest.approx((2.0, 1.0))


def test_task_names():
    names = valid_task_names()
    for n in ("lunarlander", "widowx", "metaworld/drawer-open", "metaworld/button-press",
              "metaworld/peg-insert-side", "metaworld/door-open"):
        assert n in names
    assert canonical_task_name("metaworld/drawer-open-v3") == "metaworld/drawer-open"
    assert canonical_task_name("LunarLander-v3") == "lunarlander"
    with pytest.raises(UnknownNameError) as e:
        canonical_task_name("metaworld/drawer-opne")
    assert "metaworld/drawer-open" in str(e.value) and "lunarlander" in str(e.value)


def test_method_names():
    assert parse_methods("iwr, mile") == ["mile", "iwr"]  # MILE always runs first
    with pytest.raises(UnknownNameError) as e:
        parse_methods("mile,dagger")
    assert "dagger" in str(e.value) and all(m in str(e.value) for m in METHODS)


@pytest.mark.parametrize("args, words", [
    (["--task", "metaworld/nope"], ["unknown task 'metaworld/nope'", "metaworld/drawer-open"]),
    (["--task", "lunarlander", "--methods", "mile,bc"], ["unknown method(s) bc", "hg-dagger"]),
    (["--task", "lunarlander", "--mile", "lamda=0.3"], ["--mile 'lamda=0.3'", "lam,"]),
    (["--task", "lunarlander", "--mile", "train_mental=maybe"],
     ["MileConfig.train_mental must be True or False", "'maybe'"]),
    (["--task", "lunarlander", "--mile", "max_updates=1.5"],
     ["MileConfig.max_updates must be an integer"]),
    (["--task", "lunarlander", "--mile", "c_update=exact"],
     ["MileConfig.c_update must be 'learn', 'rate' or 'fixed'"]),
    (["--task", "lunarlander", "--train", "seed=3"], ["--train 'seed=3'"]),
    (["--task", "lunarlander", "--demos", "-1"], ["--demos must be >= 0"]),
])
def test_cli_bad_names(tmp_path, capsys, args, words):
    rc = cli.main(args + ["--out", str(tmp_path / "r.json"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    for w in words:
        assert w in err
    assert "Traceback" not in err


def test_report_table_and_plot(tmp_path):
    from mile_ros.benchmark.plots import plot_curves
    from mile_ros.benchmark.report import table
    data = {"format": "mile_ros.bench/1", "timing": {},
            "config": {"task": "toy/reach", "iterations": 3, "episodes": 1, "n_eval": 50},
            "experts": {"expert": {"success_rate": 1.0, "mean_return": -5.0}},
            "initial": {"0": {"success_rate": 0.2}, "1": {"success_rate": 0.4}},
            "person": {}, "methods": {}}
    for m, gain in (("iwr", 0.1), ("mile", 0.2)):  # MILE is listed first whatever the file's order
        for s in ("0", "1"):
            data["methods"].setdefault(m, {})[s] = [
                {"iteration": i,
                 "success_rate": min(1.0, 0.3 + gain * i + 0.1 * (m == "iwr") * int(s)),
                 "interventions": 5, "interventions_total": 5 * i, "intervention_rate": 0.2}
                for i in range(4)]
    text = table(data)
    rows = [line for line in text.splitlines()
            if line.startswith("| mile") or line.startswith("| iwr")]
    assert rows[0] == "| mile | 0.30 ± 0.00 | 0.50 ± 0.00 | 0.70 ± 0.00 | 0.90 ± 0.00 | 15 |  |"
    # paired over seeds: 0.9 - 0.6 at seed 0 and 0.9 - 0.7 at seed 1
    assert rows[1].endswith("| +0.25 ± 0.05 (n=2) |")
    # expert 1.0: mile reaches 0.95 at no iteration (max 0.9), iwr at none either
    assert "mile -/-; iwr -/-" in text
    # goal 0.665: mile at it 2; iwr seed 0 never, seed 1 at 3
    data["experts"]["expert"]["success_rate"] = 0.7
    assert "mile 2/2; iwr -/3" in table(data)
    plot_curves([data], str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_mile_settings_from_the_command_line_are_typed():
    """`--mile train_mental=False` must mean False (a non-empty string would be truthy)."""
    from mile_ros.benchmark.protocols import BenchConfig
    from mile_ros.learning.config import parse_settings

    mile = parse_settings(["train_mental=False", "lam=1", "c=null", "max_updates=400",
                           "min_updates=100", "beta_update=learn"], "--mile")
    cfg = BenchConfig(task="toy/reach", methods=["mile"], mile=mile).mile_config(3)
    assert cfg.train_mental is False and cfg.lam == 1.0 and cfg.c is None
    assert cfg.max_updates == 400 and cfg.beta_update == "learn" and cfg.seed == 3
    with pytest.raises(ValueError, match="--mile 'warm_start=true'"):
        parse_settings(["warm_start=true"], "--mile")
    with pytest.raises(ValueError, match="--mile: MileConfig.lam"):
        BenchConfig(task="toy/reach", methods=["mile"], mile={"lam": 3}).mile_config(0)
