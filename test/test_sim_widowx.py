"""Simulated WidowX: PoE kinematics, IK, the MuJoCo model, the block-through-hole task, expert."""
from pathlib import Path

import mujoco
import numpy as np
import pytest

from mile_ros.description import kinematics as K
from mile_ros.sim.widowx import (
    ACTION_NAMES,
    BLOCK_HALF,
    BOX_TOP,
    OBSERVATION_NAMES,
    POLICY_STATE_NAMES,
    WidowXTask,
    block_in_box,
    expert_action_from_observation,
)

SHARED_YAML = Path(__file__).resolve().parents[2] / "shared" / "data" / "wx250s_kinematics.yaml"


@pytest.fixture(scope="module")
def kin():
    return K.load_kinematics()


@pytest.fixture
def env():
    task = WidowXTask(seed=0)
    yield task
    task.close()


def run_episode(task, policy, seed):
    obs, _ = task.reset(seed=seed)
    trajectory = [obs]
    for _ in range(task.max_episode_steps):
        obs, reward, terminated, truncated, info = task.step(policy(obs))
        trajectory.append(obs)
        if terminated or truncated:
            break
    return np.array(trajectory), info, reward


# --- kinematics -------------------------------------------------------------------------------

def test_fk_at_zero_is_home_pose(kin):
    assert np.allclose(K.forward_kinematics(kin, np.zeros(6)), kin.M, atol=1e-12)
    assert np.allclose(kin.M[:3, 3], [0.458325, 0.0, 0.36065])


def test_fast_fk_matches_generic_poe_and_jacobian_matches_finite_differences(kin):
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.uniform(kin.lower, kin.upper)
        assert np.allclose(K.forward_kinematics(kin, q), K.reference_forward_kinematics(kin, q),
                           atol=1e-12)
    q = rng.uniform(-1, 1, 6)
    T, J = K.fk_and_jacobian(kin, q)
    eps = 1e-6
    for i in range(6):
        Ti = K.forward_kinematics(kin, q + eps * np.eye(6)[i])
        v_point = (Ti[:3, 3] - T[:3, 3]) / eps
        assert np.allclose(v_point, J[3:, i] - K.skew(T[:3, 3]) @ J[:3, i], atol=1e-5)
        w = K.rotation_log(Ti[:3, :3] @ T[:3, :3].T) / eps
        assert np.allclose(w, J[:3, i], atol=1e-5)


def test_rotation_log_inverts_rodrigues_including_near_pi():
    rng = np.random.default_rng(7)
    for angle in [0.0, 1e-8, 0.3, 2.0, np.pi - 1e-3, np.pi - 1e-6, np.pi]:
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        R = K.screw_exp(np.concatenate([axis, np.zeros(3)]), angle)[:3, :3]
        w = K.rotation_log(R)
        assert abs(np.linalg.norm(w) - angle) < 1e-6
        R_back = K.screw_exp(np.concatenate([w / max(np.linalg.norm(w), 1e-12), np.zeros(3)]),
                             np.linalg.norm(w))[:3, :3]
        assert np.allclose(R_back, R, atol=1e-6)


def test_fk_matches_mujoco_site_for_random_configurations(env, kin):
    rng = np.random.default_rng(1)
    for _ in range(30):
        q = rng.uniform(kin.lower, kin.upper)
        env.data.qpos[env._qadr[:6]] = q
        mujoco.mj_kinematics(env.model, env.data)
        T = K.forward_kinematics(kin, q)
        pos, quat = env.ee_pose()
        R = np.zeros(9)
        mujoco.mju_quat2Mat(R, quat)
        assert np.linalg.norm(pos - T[:3, 3]) < 1e-3
        assert np.abs(R.reshape(3, 3) - T[:3, :3]).max() < 1e-3


def test_ik_round_trip_gripper_down(kin):
    rng = np.random.default_rng(2)
    R_down = K.gripper_down_rotation(0.0)
    for _ in range(20):
        target = rng.uniform([0.15, -0.25, 0.02], [0.38, 0.25, 0.25])
        result = K.inverse_kinematics(kin, target)
        assert result.converged, target
        T = K.forward_kinematics(kin, result.q)
        assert np.linalg.norm(T[:3, 3] - target) < 5e-4
        assert np.abs(T[:3, :3] - R_down).max() < 5e-3
        assert np.all(result.q >= kin.lower) and np.all(result.q <= kin.upper)


def test_ik_round_trip_from_joint_space(kin):
    rng = np.random.default_rng(3)
    for _ in range(20):
        q = rng.uniform(0.5 * kin.lower, 0.5 * kin.upper)
        T = K.forward_kinematics(kin, q)
        result = K.inverse_kinematics(kin, T[:3, 3], q + rng.normal(0, 0.05, 6),
                                      target_rot=T[:3, :3])
        assert result.converged
        assert np.allclose(K.forward_kinematics(kin, result.q), T, atol=1e-3)


def test_ik_out_of_reach_reports_failure_and_stays_in_limits(kin):
    result = K.inverse_kinematics(kin, [0.9, 0.0, 0.1])
    assert not result.converged and result.pos_error_m > 0.3
    assert np.all(result.q >= kin.lower) and np.all(result.q <= kin.upper)
    with pytest.raises(ValueError, match="target_pos"):
        K.inverse_kinematics(kin, [0.3, np.nan, 0.1])


def test_clamp_joints(kin):
    q, clamped = kin.clamp_joints(kin.upper + 0.5)
    assert clamped and np.allclose(q, kin.upper)
    q, clamped = kin.clamp_joints(np.zeros(6))
    assert not clamped and np.allclose(q, 0.0)


def test_load_kinematics_errors_name_the_file(tmp_path):
    with pytest.raises(K.KinematicsError, match="missing.yaml"):
        K.load_kinematics(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(K.DEFAULT_KINEMATICS_PATH.read_text().replace("Slist:", "Slist_renamed:"))
    with pytest.raises(K.KinematicsError, match=r"bad\.yaml.*Slist"):
        K.load_kinematics(bad)
    assert issubclass(K.KinematicsError, ValueError)


@pytest.mark.skipif(not SHARED_YAML.exists(), reason="shared kinematics file not present")
def test_packaged_yaml_is_the_shared_file():
    assert K.DEFAULT_KINEMATICS_PATH.read_text() == SHARED_YAML.read_text()


# --- the simulated arm ------------------------------------------------------------------------

def test_api_names_and_shapes(env, kin):
    obs, info = env.reset(seed=5)
    assert env.action_names == ACTION_NAMES == ["dx", "dy", "dz", "gripper"]
    assert env.observation_names == OBSERVATION_NAMES and obs.shape == (len(OBSERVATION_NAMES),)
    assert obs.dtype == np.float64 and info["success"] is False
    assert env.joint_names == list(kin.arm_joints) + list(kin.gripper_joints)
    q = env.joint_positions()
    assert q.shape == (8,)
    lo, hi = kin.finger_range_m
    assert lo - 1e-3 <= q[6] <= hi + 1e-3 and -hi - 1e-3 <= q[7] <= -lo + 1e-3
    pos, quat = env.ee_pose()
    assert np.allclose(pos, obs[:3]) and abs(np.linalg.norm(quat) - 1) < 1e-9
    R = np.zeros(9)
    mujoco.mju_quat2Mat(R, quat)
    assert R.reshape(3, 3)[:, 0] @ [0, 0, -1] > 0.999       # gripper points down
    assert env.max_episode_steps == 300 and env.substeps > 1


def test_relative_entries_are_the_differences_and_the_bench_task_reads_the_policy_names(env):
    from mile_ros.sim.tasks import WidowXBenchTask

    o = dict(zip(OBSERVATION_NAMES, env.reset(seed=5)[0]))
    for axis in "xyz":
        assert o[f"block_d{axis}"] == pytest.approx(o[f"block_{axis}"] - o[f"ee_{axis}"])
    for axis in "xy":
        assert o[f"hole_d{axis}"] == pytest.approx(o[f"hole_{axis}"] - o[f"block_{axis}"])
    assert set(POLICY_STATE_NAMES) <= set(OBSERVATION_NAMES)
    assert not {"ee_x", "ee_y", "block_x", "hole_x"} & set(POLICY_STATE_NAMES)
    task = WidowXBenchTask(seed=0)
    try:
        state = task.reset(5)
        assert task.state_names == POLICY_STATE_NAMES and task.obs_dim == len(state)
        full = task._env.observation()
        assert np.allclose(state, [full[OBSERVATION_NAMES.index(n)] for n in POLICY_STATE_NAMES])
        moved, *_ = task.step(np.array([0.5, 0.0, 0.0, -1.0]))
        assert moved.shape == state.shape
    finally:
        task.close()
    with pytest.raises(ValueError, match="'policy', 'all' or names"):
        WidowXBenchTask(seed=0, features=["ee_z", "no_such_entry"])


def test_action_moves_end_effector_by_max_step(env):
    env.reset(seed=1)
    start = env.ee_target
    _, _, _, _, info = env.step([1.0, 0.0, 0.0, -1.0])
    assert np.allclose(env.ee_target - start, [0.015, 0, 0], atol=1e-9)
    assert not info["clamped"]
    for _ in range(5):
        env.hold()
    assert np.linalg.norm(env.observation()[:3] - env.ee_target) < 2e-3   # servos track


def test_out_of_range_action_is_clipped_and_reported(env):
    env.reset(seed=1)
    start = env.ee_target
    _, _, _, _, info = env.step([5.0, 0.0, -3.0, 2.0])
    assert info["clamped"] and info["clamped_action"]
    assert np.allclose(env.ee_target - start, [0.015, 0, -0.015], atol=1e-9)


def test_workspace_clamping(env):
    env.reset(seed=2)
    for _ in range(40):
        _, _, _, _, info = env.step([0.0, 0.0, -1.0, 0.0])
    assert info["clamped"] and info["clamped_workspace"]
    assert env.ee_target[2] == pytest.approx(env.workspace_min[2])
    assert env.observation()[2] > env.workspace_min[2] - 3e-3
    for _ in range(60):                              # the low near corner is within reach
        _, _, _, _, info = env.step([-1.0, 0.0, -1.0, 0.0])
    assert np.all(env.ee_target >= env.workspace_min - 1e-9)
    assert np.all(env.ee_target <= env.workspace_max + 1e-9)
    assert env.ee_target[0] == pytest.approx(env.workspace_min[0]) and info["clamped_workspace"]
    assert not info["clamped_reach"]


def test_joint_targets_stay_within_limits_and_reach(env, kin):
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    reach_clamped = False
    for t in range(150):
        action = np.array([1.0, 1.0, 1.0, 0.0]) if t < 60 else rng.uniform(-1, 1, 4)
        _, _, _, _, info = env.step(action)
        reach_clamped |= info["clamped_reach"]
        assert np.all(env.joint_targets >= kin.lower) and np.all(env.joint_targets <= kin.upper)
        q = env.joint_positions()[:6]
        assert np.all(q >= kin.lower - 1e-2) and np.all(q <= kin.upper + 1e-2)
    assert reach_clamped                        # the far corner of the box is out of reach
    assert np.isfinite(env.observation()).all()


@pytest.mark.parametrize("bad", [[np.nan, 0, 0, 0], [0, 0, np.inf, 0], [0, 0, 0, -np.inf]])
def test_non_finite_action_raises(env, bad):
    env.reset(seed=0)
    before = env.joint_positions()
    with pytest.raises(ValueError, match="action"):
        env.step(bad)
    assert env.tick == 0 and np.array_equal(env.joint_positions(), before)


def test_wrong_shape_action_and_bad_arguments_raise(env):
    with pytest.raises(ValueError, match="action"):
        env.step([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="seed"):
        env.reset(seed=-1)
    with pytest.raises(ValueError, match="control_rate_hz"):
        WidowXTask(control_rate_hz=0)
    with pytest.raises(ValueError, match="max_ee_step_m"):
        WidowXTask(max_ee_step_m=float("nan"))
    with pytest.raises(ValueError, match="workspace_min_m"):
        WidowXTask(workspace_min_m=(0.5, 0.0, 0.0))
    with pytest.raises(ValueError, match="width"):
        env.render(0, 64)


def test_gripper_opens_and_closes(env):
    env.reset(seed=0)
    opening = env.observation()[3]
    assert 0.045 < opening < 0.055
    for _ in range(5):
        obs, *_ = env.step([0.0, 0.0, 0.5, 1.0])      # close in the air, away from the block
    assert obs[3] < 0.01
    for _ in range(5):
        obs, *_ = env.step([0.0, 0.0, 0.0, -1.0])
    assert obs[3] > 0.045


def test_same_seed_same_trajectory_and_seeds_differ():
    a, b = WidowXTask(seed=7), WidowXTask(seed=123)
    try:
        rng = np.random.default_rng(4)
        actions = rng.uniform(-1, 1, (40, 4))
        traj_a = [a.reset(seed=7)[0]] + [a.step(x)[0] for x in actions]
        b.reset(seed=99)                             # a different history before the reset
        for x in actions[:10]:
            b.step(x)
        traj_b = [b.reset(seed=7)[0]] + [b.step(x)[0] for x in actions]
        assert np.array_equal(np.array(traj_a), np.array(traj_b))
        assert np.array_equal(a.joint_positions(), b.joint_positions())
        expert_a, _, _ = run_episode(a, lambda _o: a.expert_action(), 11)
        expert_b, _, _ = run_episode(b, lambda _o: b.expert_action(), 11)
        assert np.array_equal(expert_a, expert_b)
        starts = {tuple(np.round(a.reset(seed=s)[0][4:], 6)) for s in range(5)}
        assert len(starts) == 5                      # block and hole positions are randomised
    finally:
        a.close()
        b.close()


def test_success_test_geometry():
    hole = np.array([0.27, 0.12])
    assert block_in_box([0.27, 0.12, BLOCK_HALF], hole)
    assert block_in_box([0.30, 0.14, BLOCK_HALF], hole)          # slid into a corner
    assert not block_in_box([0.27, 0.12, BOX_TOP + BLOCK_HALF], hole)   # resting on the lid
    assert not block_in_box([0.20, 0.12, BLOCK_HALF], hole)      # on the table beside the box


def test_expert_succeeds_on_most_seeds(env):
    lengths, successes = [], 0
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        for _ in range(env.max_episode_steps):
            action = env.expert_action()
            assert action.shape == (4,) and np.all(np.abs(action) <= 1.0)
            assert np.allclose(action, expert_action_from_observation(obs))
            obs, reward, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        successes += info["success"]
        assert terminated == info["success"] and reward == float(info["success"])
        lengths.append(env.tick)
    assert successes >= 18, successes
    assert 40 <= np.mean(lengths) <= 200


def test_noisy_expert_still_succeeds(env):
    rng = np.random.default_rng(5)

    def noisy(_o):
        return np.clip(env.expert_action() + rng.normal(0, 0.2, 4), -1, 1)
    successes = sum(run_episode(env, noisy, seed)[1]["success"] for seed in range(100, 108))
    assert successes >= 7


def test_idle_and_random_policies_rarely_succeed():
    task = WidowXTask(seed=0, episode_timeout_s=5.0)
    try:
        rng = np.random.default_rng(6)
        idle = [run_episode(task, lambda _o: np.zeros(4), s)[1] for s in range(5)]
        rand = [run_episode(task, lambda _o: rng.uniform(-1, 1, 4), s)[1] for s in range(10)]
        assert not any(i["success"] for i in idle)
        assert idle[0]["tick"] == task.max_episode_steps == 100
        assert sum(i["success"] for i in rand) <= 1
    finally:
        task.close()


def test_timeout_truncates():
    task = WidowXTask(seed=0, episode_timeout_s=1.0, control_rate_hz=10.0)
    try:
        assert task.max_episode_steps == 10
        flags = [task.step(np.zeros(4))[2:4] for _ in range(10)]
        assert flags[-1] == (False, True) and all(f == (False, False) for f in flags[:-1])
    finally:
        task.close()


def test_render_shape_dtype_and_content(env):
    env.reset(seed=0)
    img = env.render(96, 80)
    assert img.shape == (80, 96, 3) and img.dtype == np.uint8
    assert img.std() > 10 and len(np.unique(img.reshape(-1, 3), axis=0)) > 20
    red = (img[..., 0] > 150) & (img[..., 1] < 80) & (img[..., 2] < 80)
    blue = (img[..., 2] > 120) & (img[..., 0] < 100)
    assert red.sum() > 0 and blue.sum() > 10          # the block and the box are in view
    for _ in range(10):
        env.step([0.0, 1.0, 0.0, 1.0])
    assert np.abs(env.render(96, 80).astype(int) - img).sum() > 0   # the arm moved
    assert env.render(64, 64).shape == (64, 64, 3)
    env.close()
    assert env.render(32, 32).shape == (32, 32, 3)    # a renderer is made again after close()
