"""One MILE: the benchmark's MILE and the `train` node's are the same code.

For the same episodes (the benchmark's in memory, the train node's read back from rosbag2 bags),
the same warm start and the same seed and settings, both produce the same model, weight for
weight, and the same c.
"""
import numpy as np
import torch

from mile_ros.benchmark.protocols import BenchConfig, train_mile_method
from mile_ros.learning import ActionSpec, MileConfig, train_bc
from mile_ros.learning import observations as obs
from mile_ros.learning.checkpoint import load_checkpoint, save_checkpoint
from mile_ros.tools.train import run_training
from support.train_helpers import simulate_episode, write_external_bag

SETTINGS = {"max_updates": 120, "min_updates": 40, "hidden": [32, 32]}


def test_benchmark_and_train_node_fit_the_same_model(tmp_path):
    torch.set_num_threads(1)
    episodes = [simulate_episode(seed, max_ticks=40) for seed in (1, 2, 3)]
    bags = [write_external_bag(tmp_path / "iter1" / f"episode_{i:04d}", e, episode_index=i)
            for i, e in enumerate(episodes)]
    names = episodes[0]["state_names"]
    obs_spec, act_spec = obs.obs_spec(names, None), ActionSpec(episodes[0]["action_names"])
    data = [{"state": e["state"], "a_r": e["a_r"], "a_h": e["a_h"], "nu": e["nu"]}
            for e in episodes]
    init = train_bc(data, obs_spec, act_spec, MileConfig(hidden=(32, 32), max_updates=30,
                                                         min_updates=30, seed=9),
                    progress=False)
    save_checkpoint(init, tmp_path / "init")

    node = run_training([str(tmp_path / "iter1")], tmp_path / "ckpt", init=str(tmp_path / "init"),
                        seed=7, settings=SETTINGS, progress=False, say=lambda _m: None)
    from_node = load_checkpoint(node.checkpoint)
    assert node.metrics["data"]["ticks"] == sum(len(e["nu"]) for e in episodes)

    cfg = BenchConfig(task="widowx", methods=["mile"], mile=SETTINGS)
    from_bench = train_mile_method(cfg, None, load_checkpoint(tmp_path / "init"), data, seed=7)

    for net in ("policy", "mental"):
        a = getattr(from_node, net).state_dict()
        b = getattr(from_bench, net).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), net
    assert from_node.c == from_bench.c and from_node.beta == from_bench.beta
    probe = np.concatenate([np.tile(e["state"][:5], (1, obs_spec.frame_stack)) for e in episodes])
    assert np.array_equal(from_node.intervention_probability(probe),
                          from_bench.intervention_probability(probe))
    # and it is not vacuous: another seed gives another model
    other = train_mile_method(cfg, None, load_checkpoint(tmp_path / "init"), data, seed=8)
    assert not torch.equal(other.policy.state_dict()["head.weight"],
                           from_bench.policy.state_dict()["head.weight"])
    assert len(bags) == 3
