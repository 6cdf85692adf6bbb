"""Kinematics of the Interbotix WidowX 250 6DOF (wx250s) in product-of-exponentials form.

ROS-free and MuJoCo-free (numpy only), so the simulated arm and the real-robot backend share it.
Facts (screw axes, home pose, joint limits, finger travel) come from ``wx250s_kinematics.yaml``,
a copy of ``shared/data/wx250s_kinematics.yaml`` installed with the package.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

DEFAULT_KINEMATICS_PATH = Path(__file__).with_name("wx250s_kinematics.yaml")


class KinematicsError(ValueError):
    """A kinematics file is missing or malformed (the message names the file and the field)."""


@dataclass(frozen=True)
class ArmKinematics:
    robot_model: str
    arm_joints: tuple[str, ...]
    gripper_joints: tuple[str, ...]
    Slist: np.ndarray            # [6, 6] space-frame screw axes (w, v), one row per joint
    M: np.ndarray                # [4, 4] end-effector home pose
    lower: np.ndarray            # [6] joint limits (rad)
    upper: np.ndarray
    finger_range_m: tuple[float, float]   # finger travel from the gripper centre line (m)
    joint_state_rate_hz: float

    def __post_init__(self):
        # per-joint constants of exp([S]theta) for a revolute screw: [w], [w]^2, [w]v, [w]^2 v
        W = np.array([skew(s[:3]) for s in self.Slist])
        W2 = W @ W
        for name, value in (("_W", W), ("_W2", W2), ("_Wv", W @ self.Slist[:, 3:, None]),
                            ("_W2v", W2 @ self.Slist[:, 3:, None])):
            value = value[..., 0] if value.ndim == 3 and value.shape[-1] == 1 else value
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    def clamp_joints(self, q) -> tuple[np.ndarray, bool]:
        """Clamp joint positions to the limits; returns (q, whether anything was clamped)."""
        q = np.asarray(q, dtype=float)
        clamped = np.clip(q, self.lower, self.upper)
        return clamped, bool(np.any(clamped != q))

    def fk(self, q) -> np.ndarray:
        return forward_kinematics(self, q)

    def ik(self, target_pos, q_init=None, **kwargs) -> "IKResult":
        return inverse_kinematics(self, target_pos, q_init, **kwargs)


@dataclass(frozen=True)
class IKResult:
    q: np.ndarray
    pos_error_m: float
    rot_error_rad: float
    converged: bool
    iterations: int


def _field(data: dict, key: str, path: Path, shape=None) -> np.ndarray | object:
    if key not in data:
        raise KinematicsError(f"{path}: missing field '{key}'")
    if shape is None:
        return data[key]
    try:
        value = np.asarray(data[key], dtype=float)
    except (TypeError, ValueError) as exc:
        raise KinematicsError(f"{path}: field '{key}' is not numeric ({exc})") from None
    if value.shape != shape or not np.all(np.isfinite(value)):
        raise KinematicsError(f"{path}: field '{key}' must be finite with shape {shape}, "
                              f"got shape {value.shape}")
    return value


def load_kinematics(path: str | Path | None = None) -> ArmKinematics:
    """Load and validate a kinematics YAML (default: the copy installed with the package)."""
    return _load_cached(str(Path(path) if path is not None else DEFAULT_KINEMATICS_PATH))


@functools.lru_cache(maxsize=8)
def _load_cached(path_str: str) -> ArmKinematics:
    path = Path(path_str)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise KinematicsError(f"{path}: cannot read kinematics file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise KinematicsError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise KinematicsError(f"{path}: expected a mapping at the top level")
    arm_joints = tuple(_field(data, "arm_joints", path))
    if len(arm_joints) != 6:
        raise KinematicsError(f"{path}: 'arm_joints' must list 6 joints, got {len(arm_joints)}")
    Slist = _field(data, "Slist", path, (6, 6))
    if not np.allclose(np.linalg.norm(Slist[:, :3], axis=1), 1.0, atol=1e-6):
        raise KinematicsError(f"{path}: 'Slist' rows must be revolute screws (unit rotation axis)")
    limits = _field(data, "joint_limits_rad", path)
    if not isinstance(limits, dict):
        raise KinematicsError(f"{path}: 'joint_limits_rad' must have 'lower' and 'upper'")
    lower = _field(limits, "lower", path, (6,))
    upper = _field(limits, "upper", path, (6,))
    if np.any(lower >= upper):
        raise KinematicsError(f"{path}: 'joint_limits_rad' lower must be below upper")
    fingers = _field(data, "gripper_finger_range_m", path, (2,))
    for arr in (Slist, lower, upper):
        arr.setflags(write=False)
    M = _field(data, "M", path, (4, 4))
    M.setflags(write=False)
    return ArmKinematics(
        robot_model=str(data.get("robot_model", "")),
        arm_joints=arm_joints,
        gripper_joints=tuple(data.get("gripper_joints", ("left_finger", "right_finger"))),
        Slist=Slist, M=M, lower=lower, upper=upper,
        finger_range_m=(float(min(fingers)), float(max(fingers))),
        joint_state_rate_hz=float(data.get("joint_state_rate_hz", 100.0)),
    )


_EYE3 = np.eye(3)


# --- Lie-group helpers -------------------------------------------------------------------------

def skew(w) -> np.ndarray:
    return np.array([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]])


def screw_exp(S, theta: float) -> np.ndarray:
    """exp([S] theta) for a revolute screw S = (w, v) with |w| = 1."""
    w, v = S[:3], S[3:]
    W = skew(w)
    s, c = np.sin(theta), np.cos(theta)
    W2 = W @ W
    T = np.eye(4)
    T[:3, :3] = np.eye(3) + s * W + (1.0 - c) * W2
    T[:3, 3] = (theta * np.eye(3) + (1.0 - c) * W + (theta - s) * W2) @ v
    return T


def adjoint(T) -> np.ndarray:
    R, p = T[:3, :3], T[:3, 3]
    Ad = np.zeros((6, 6))
    Ad[:3, :3] = R
    Ad[3:, 3:] = R
    Ad[3:, :3] = skew(p) @ R
    return Ad


def rotation_log(R) -> np.ndarray:
    """Axis-angle vector of a rotation matrix (so(3) log), robust near 0 and pi."""
    cos_t = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
    theta = np.arccos(cos_t)
    vee = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    if theta < 1e-6:
        return 0.5 * vee
    if np.pi - theta < 1e-4:
        # near pi: axis from the symmetric part
        B = (R + np.eye(3)) / 2.0
        axis = np.sqrt(np.clip(np.diag(B), 0.0, None))
        k = int(np.argmax(axis))
        axis = B[k] / max(axis[k], 1e-12)
        axis /= np.linalg.norm(axis)
        if np.dot(axis, vee) < 0:
            axis = -axis
        return theta * axis
    return theta / (2.0 * np.sin(theta)) * vee


def rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def gripper_down_rotation(yaw: float = 0.0) -> np.ndarray:
    """End-effector orientation with the gripper pointing straight down.

    The end-effector x axis (approach direction) points along world -z; ``yaw`` turns the finger
    closing axis (end-effector y) about world z, 0 meaning fingers close along world y.
    """
    pitch_down = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # Ry(+pi/2)
    return rot_z(yaw) @ pitch_down


# --- forward / inverse kinematics --------------------------------------------------------------

def _check_q(q) -> np.ndarray:
    q = np.asarray(q, dtype=float)
    if q.shape != (6,):
        raise ValueError(f"joint positions q must have shape (6,), got {q.shape}")
    return q


def fk_and_jacobian(kin: ArmKinematics, q, jacobian: bool = True):
    """(T(q), space Jacobian [6, 6] or None), all joints at once.

    T(q) = exp([S1]q1) ... exp([S6]q6) M; Jacobian column i = Ad(T_1..i-1) S_i, rows (w, v) with
    v the velocity of the point at the space origin.
    """
    q = _check_q(q)
    s, c = np.sin(q), np.cos(q)
    E = np.zeros((6, 4, 4))                     # exp([S_i] q_i), Rodrigues form
    E[:, :3, :3] = _EYE3 + s[:, None, None] * kin._W + (1.0 - c)[:, None, None] * kin._W2
    E[:, :3, 3] = (q[:, None] * kin.Slist[:, 3:] + (1.0 - c)[:, None] * kin._Wv
                   + (q - s)[:, None] * kin._W2v)
    E[:, 3, 3] = 1.0
    prefix = np.empty((7, 4, 4))                # prefix[i] = E_0 ... E_{i-1}
    prefix[0] = np.eye(4)
    for i in range(6):
        prefix[i + 1] = prefix[i] @ E[i]
    T = prefix[6] @ kin.M
    if not jacobian:
        return T, None
    R, p = prefix[:6, :3, :3], prefix[:6, :3, 3]
    Rw = np.einsum("kij,kj->ki", R, kin.Slist[:, :3])
    Rv = np.einsum("kij,kj->ki", R, kin.Slist[:, 3:])
    J = np.concatenate([Rw, np.cross(p, Rw) + Rv], axis=1).T
    return T, J


def forward_kinematics(kin: ArmKinematics, q) -> np.ndarray:
    """Space-frame PoE: T(q) = exp([S1]q1) ... exp([S6]q6) M."""
    return fk_and_jacobian(kin, q, jacobian=False)[0]


def space_jacobian(kin: ArmKinematics, q) -> np.ndarray:
    """[6, 6] space Jacobian; rows (w, v) with v the velocity of the point at the space origin."""
    return fk_and_jacobian(kin, q)[1]


def reference_forward_kinematics(kin: ArmKinematics, q) -> np.ndarray:
    """Straightforward PoE with generic matrix exponentials (slow; a test oracle)."""
    T = np.eye(4)
    for S, theta in zip(kin.Slist, _check_q(q)):
        T = T @ screw_exp(S, theta)
    return T @ kin.M


def default_ik_seed(target_pos, yaw: float = 0.0) -> np.ndarray:
    """Return a gripper-down configuration facing the target, used when no warm start is given."""
    heading = float(np.arctan2(target_pos[1], target_pos[0]))
    return np.array([heading, 0.0, 0.0, 0.0, np.pi / 2, heading - yaw])


def inverse_kinematics(kin: ArmKinematics, target_pos, q_init=None, target_rot=None, yaw=0.0,
                       rot_weight_m: float = 0.2, damping: float = 1e-2, tol_pos_m: float = 1e-4,
                       tol_rot_rad: float = 1e-3, max_iter: int = 100,
                       max_step_rad: float = 0.3) -> IKResult:
    """Damped-least-squares IK for an end-effector position with a full orientation constraint.

    The orientation defaults to the gripper pointing down at ``yaw`` (6 constraints for 6 joints,
    so the solution is locally unique; warm-start from the current joints to stay on one branch).
    ``rot_weight_m`` trades 1 rad of orientation error against that many metres of position error
    when the target is out of reach. Joint limits are enforced on every iteration. Returns the
    best iterate; ``converged`` is False when the tolerances were not met (e.g. out of reach).
    """
    p_star = np.asarray(target_pos, dtype=float)
    if p_star.shape != (3,) or not np.all(np.isfinite(p_star)):
        raise ValueError(f"target_pos must be 3 finite numbers, got {target_pos!r}")
    R_star = gripper_down_rotation(yaw) if target_rot is None else np.asarray(target_rot, float)
    q = default_ik_seed(p_star, yaw) if q_init is None else _check_q(q_init).copy()
    q = np.clip(q, kin.lower, kin.upper)
    best, stalled = None, 0
    for it in range(max_iter + 1):
        T, J = fk_and_jacobian(kin, q)
        p, R = T[:3, 3], T[:3, :3]
        e_p = p_star - p
        e_w = rotation_log(R_star @ R.T)
        err_p, err_w = float(np.linalg.norm(e_p)), float(np.linalg.norm(e_w))
        if err_p < tol_pos_m and err_w < tol_rot_rad:
            return IKResult(q.copy(), err_p, err_w, True, it)
        score = err_p + rot_weight_m * err_w
        if best is None or score < best[0] - 1e-7:
            stalled = 0
        else:
            stalled += 1
        if best is None or score < best[0]:
            best = (score, q.copy(), err_p, err_w, it)
        if it == max_iter or stalled >= 3:     # out of reach or at a joint limit: give up
            break
        J_w = J[:3]
        J_p = J[3:] - skew(p) @ J_w        # velocity of the end-effector point
        A = np.vstack([J_p, rot_weight_m * J_w])
        e = np.concatenate([e_p, rot_weight_m * e_w])
        dq = A.T @ np.linalg.solve(A @ A.T + damping ** 2 * np.eye(6), e)
        step = np.max(np.abs(dq))
        if step > max_step_rad:
            dq *= max_step_rad / step
        q = np.clip(q + dq, kin.lower, kin.upper)
    _, q_best, err_p, err_w, it = best
    return IKResult(q_best, err_p, err_w, False, it)
