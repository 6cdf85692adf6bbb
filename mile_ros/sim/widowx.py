"""Simulated WidowX 250 6DOF (wx250s) with a block-through-a-hole task, in MuJoCo. ROS-free.

The arm is built from the product-of-exponentials facts in ``wx250s_kinematics.yaml``: each joint
sits on its screw axis, so the MuJoCo end-effector site follows the PoE forward kinematics. Links
are primitive (capsules/boxes) and only the finger pads collide.

Task (close to the paper's real one): a 3 cm cube lies on the table at a random spot; a closed
box (a "shape sorter") with a square hole in its lid stands at another random spot. Pick the
block up, carry it over the hole, lower it into the hole and let go: success when the block has
dropped through the lid into the box.

Control, one tick at ``control_rate_hz``: action [dx, dy, dz, gripper] in [-1, 1]; dx..dz times
``max_ee_step_m`` move a target end-effector position (clamped to the workspace box), the gripper
pointing down; IK turns it into joint targets (clamped to the joint limits) for position servos;
gripper -1 = open .. +1 = closed (finger position target). Several physics substeps per tick;
``step`` runs as fast as the CPU allows (pacing to wall clock is the caller's business).

    task = WidowXTask(seed=0)
    obs, info = task.reset(seed=3)          # obs in task.observation_names order
    obs, reward, terminated, truncated, info = task.step(task.expert_action())

Observation: ee_x, ee_y, ee_z (end-effector site, m), gripper_opening (gap between the finger
pads, m), block_x, block_y, block_z (block centre), hole_x, hole_y (centre of the lid's hole), then
the same positions relative to each other: block_dx, block_dy, block_dz (block centre minus end
effector) and hole_dx, hole_dy (hole centre minus block centre). A state policy reads
POLICY_STATE_NAMES, the relative part (see there).
Reward 1.0 on the tick the block is in the box (then terminated); truncated at the timeout.
info: success, clamped (any of clamped_action: action outside [-1, 1] was clipped;
clamped_workspace: target clipped to the workspace box; clamped_reach: target out of reach, kept
where IK could go), joint_at_limit, tick, ee_target. Non-finite or wrongly shaped actions raise
ValueError. ``hold()`` is a tick that keeps every target unchanged.
"""
from __future__ import annotations

import numbers
import os

if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
    os.environ["MUJOCO_GL"] = "egl"  # headless default; must precede the mujoco import

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from mile_ros.description.kinematics import ArmKinematics, load_kinematics  # noqa: E402

# --- task geometry (metres) ---------------------------------------------------------------------
BLOCK_HALF = 0.015          # 3 cm cube
BLOCK_MASS = 0.03
HOLE_HALF = 0.021           # 4.2 cm square hole: 6 mm clearance per side
BOX_HALF = 0.05             # sorter box, 10 x 10 cm
BOX_TOP = 0.06              # top face of the lid
LID = 0.01                  # lid thickness
WALL = 0.008                # wall thickness
CAVITY_HALF = BOX_HALF - WALL
PAD_INSET = 0.012           # finger joint position minus the pad's inner face (from centre line)
PAD_HALF = (0.016, 0.005, 0.01)   # pad half sizes: along approach, across, sideways
PAD_CENTRE_X = -0.004       # pad centre along the approach axis, from the EE site (tip 12 mm past)
BLOCK_RANGE_X = (0.20, 0.32)
BLOCK_RANGE_Y = (0.05, 0.17)     # |y|; the block and the box stand on opposite sides of x axis
BOX_RANGE_X = (0.22, 0.32)
BOX_RANGE_Y = (0.10, 0.17)
START_EE = (0.22, 0.0, 0.16)
START_EE_JITTER = (0.02, 0.03, 0.02)

# scripted expert: heights of the end-effector site
GRASP_DZ = 0.008            # EE above the block centre when grasping
HOVER_DZ = 0.05             # EE above the block centre before descending
CARRY_Z = 0.11              # carrying height (block bottom ~2.5 cm above the lid)
EXPERT_SPEED = 0.5          # fraction of max_ee_step_m per tick the expert moves at most
FINGER_SAFE_Z = BOX_TOP + 0.012 + 0.004   # lowest EE over the lid (finger tips 4 mm above)

OBSERVATION_NAMES = ["ee_x", "ee_y", "ee_z", "gripper_opening",
                     "block_x", "block_y", "block_z", "hole_x", "hole_y",
                     "block_dx", "block_dy", "block_dz", "hole_dx", "hole_dy"]
# What a state policy of this task reads (the simulated task's ObsSpec, mile_ros.sim.tasks): the
# height and the gripper, and where the block and the hole are relative to the hand and to the
# block -- not where they are on the table. The block and the box stand at random spots, and a
# policy fitted to a few demonstrations in table coordinates does not carry what it learnt to a
# new spot. BC on 3 demonstrations (sim/initial.py's settings) succeeds on 4/20 and 2/20 episodes
# (training seeds 0, 1) with these, on 0/20 and 0/20 with the absolute positions; on 10: 19/20 and
# 14/20 against 5/20 and 4/20 (`python bench/bench_widowx_bc.py`, bench/results/widowx_bc.json).
POLICY_STATE_NAMES = ["ee_z", "gripper_opening", "block_dx", "block_dy", "block_dz",
                      "hole_dx", "hole_dy"]
ACTION_NAMES = ["dx", "dy", "dz", "gripper"]


def _fmt(v) -> str:
    return " ".join(f"{float(x):.6g}" for x in np.ravel(v))


def _look_at_axes(pos, target) -> str:
    forward = np.asarray(target, float) - np.asarray(pos, float)
    forward /= np.linalg.norm(forward)
    x = np.cross(forward, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(x, forward)
    return _fmt(np.concatenate([x, y]))


def _sorter_geoms() -> str:
    """Return the sorter box in its body frame.

    Four walls and a lid of four strips around the hole.
    """
    wall_z, lid_z, half_lid = (BOX_TOP - LID) / 2, BOX_TOP - LID / 2, LID / 2
    wall_c, strip = BOX_HALF - WALL / 2, (BOX_HALF - HOLE_HALF) / 2
    strip_c = HOLE_HALF + strip
    boxes = []
    for sign in (1.0, -1.0):
        boxes += [((sign * wall_c, 0, wall_z), (WALL / 2, BOX_HALF, wall_z)),
                  ((0, sign * wall_c, wall_z), (BOX_HALF, WALL / 2, wall_z)),
                  ((0, sign * strip_c, lid_z), (BOX_HALF, strip, half_lid)),
                  ((sign * strip_c, 0, lid_z), (strip, HOLE_HALF, half_lid))]
    return "\n      ".join(f'<geom class="sorter" pos="{_fmt(p)}" size="{_fmt(h)}"/>'
                           for p, h in boxes)


def _joint_frames(kin: ArmKinematics):
    """(axes, body offsets rel, end-effector site) of the arm.

    Joints placed on the PoE screw axes.
    """
    if not np.allclose(kin.M[:3, :3], np.eye(3)):
        raise ValueError("build_mjcf expects M with identity rotation (the wx250s home pose)")
    axes = [s[:3] for s in kin.Slist]
    # A point on each joint axis: q = w x v for a unit w (the foot of the perpendicular).
    points = [np.cross(s[:3], s[3:]) for s in kin.Slist]
    # Slide points along their axes to where the real links put them (waist at the base top,
    # forearm roll between elbow and wrist, wrist rotate 65 mm past the wrist pitch joint).
    points[0] = np.array([0.0, 0.0, 0.072])
    points[3] = points[2] + np.dot(points[4] - points[2], axes[3]) * 0.4 * axes[3]
    points[5] = points[4] + 0.065 * axes[5]
    rel = [points[0]] + [points[i] - points[i - 1] for i in range(1, 6)]
    site = kin.M[:3, 3] - points[5]            # end-effector site in the gripper body

    return axes, rel, site


def _mjcf_header(timestep: float) -> str:
    """Compiler, solver, visual settings and the default classes of the scene."""
    return f"""
<mujoco model="wx250s_block_hole">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{timestep:.8f}" integrator="implicitfast" cone="elliptic" impratio="5"/>
  <visual>
    <global offwidth="1280" offheight="1024"/>
    <quality shadowsize="0"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
  </visual>
  <default>
    <joint type="hinge" armature="0.01" damping="0.05"/>
    <position kp="300" dampratio="1"/>
    <default class="visual">
      <geom contype="0" conaffinity="0" density="600" rgba="0.15 0.15 0.17 1"/>
    </default>
    <default class="finger">
      <joint type="slide" axis="0 1 0" armature="0.01" damping="0.5"/>
      <geom type="box" size="{_fmt(PAD_HALF)}" mass="0.02" rgba="0.35 0.35 0.4 1"
            friction="1.2 0.01 0.0002" solref="0.004 1" solimp="0.95 0.99 0.001"/>
      <position forcerange="-8 8"/>
    </default>
    <default class="sorter">
      <geom type="box" rgba="0.2 0.35 0.8 1"/>
    </default>
  </default>
"""


def _arm_bodies(kin: ArmKinematics, axes, rel, site) -> str:
    """Return the arm's nested bodies, from the shoulder to the two fingers."""
    names, lo, hi = kin.arm_joints, kin.lower, kin.upper
    f_lo, f_hi = kin.finger_range_m
    left, right = kin.gripper_joints
    pad_y = PAD_INSET - PAD_HALF[1]

    def joint(i):
        return (f'<joint name="{names[i]}" axis="{_fmt(axes[i])}" '
                f'range="{lo[i]:.6f} {hi[i]:.6f}"/>')

    def link(to, radius):
        return f'<geom class="visual" type="capsule" fromto="0 0 0 {_fmt(to)}" size="{radius}"/>'

    return f"""    <body name="shoulder_link" pos="{_fmt(rel[0])}" gravcomp="1">
      {joint(0)}
      <geom class="visual" type="cylinder" fromto="0 0 0 {_fmt(rel[1])}" size="0.04"/>
      <body name="upper_arm_link" pos="{_fmt(rel[1])}" gravcomp="1">
        {joint(1)}
        {link(rel[2], 0.025)}
        <body name="upper_forearm_link" pos="{_fmt(rel[2])}" gravcomp="1">
          {joint(2)}
          {link(rel[3], 0.022)}
          <body name="lower_forearm_link" pos="{_fmt(rel[3])}" gravcomp="1">
            {joint(3)}
            {link(rel[4], 0.02)}
            <body name="wrist_link" pos="{_fmt(rel[4])}" gravcomp="1">
              {joint(4)}
              {link(rel[5], 0.018)}
              <body name="gripper_link" pos="{_fmt(rel[5])}" gravcomp="1">
                {joint(5)}
                <geom class="visual" type="box" pos="{site[0] - 0.045:.6f} 0 0"
                      size="0.02 0.035 0.015"/>
                <site name="ee" pos="{_fmt(site)}" size="0.004" rgba="1 0.8 0 1"/>
                <body name="left_finger_link" pos="{_fmt(site)}" gravcomp="1">
                  <joint class="finger" name="{left}" range="{f_lo} {f_hi}"/>
                  <geom class="finger" name="left_pad" pos="{PAD_CENTRE_X} {-pad_y:.6f} 0"/>
                </body>
                <body name="right_finger_link" pos="{_fmt(site)}" gravcomp="1">
                  <joint class="finger" name="{right}" range="{-f_hi} {-f_lo}"/>
                  <geom class="finger" name="right_pad" pos="{PAD_CENTRE_X} {pad_y:.6f} 0"/>
                </body>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>
"""


def build_mjcf(kin: ArmKinematics, timestep: float) -> str:
    """MJCF text of the arm, table and sorter box; joints placed on the PoE screw axes."""
    axes, rel, site = _joint_frames(kin)
    names, lo, hi = kin.arm_joints, kin.lower, kin.upper
    f_lo, f_hi = kin.finger_range_m
    left, right = kin.gripper_joints
    servos = "\n    ".join(f'<position name="{n}" joint="{n}" '
                           f'ctrlrange="{lo[i]:.6f} {hi[i]:.6f}"/>'
                           for i, n in enumerate(names))
    cam_pos, cam_target = (0.60, -0.25, 0.46), (0.25, 0.0, 0.06)
    return _mjcf_header(timestep) + f"""  <worldbody>
    <light pos="0.3 0 1.2" dir="0 0 -1" directional="true" castshadow="false"
           diffuse="0.5 0.5 0.5"/>
    <geom name="table" type="plane" size="0.8 0.8 0.05" rgba="0.72 0.66 0.56 1"
          friction="0.8 0.005 0.0001"/>
    <camera name="workspace" pos="{_fmt(cam_pos)}" fovy="50"
            xyaxes="{_look_at_axes(cam_pos, cam_target)}"/>
    <geom class="visual" name="base" type="cylinder" pos="0 0 0.036" size="0.055 0.036"/>
""" + _arm_bodies(kin, axes, rel, site) + f"""    <body name="block" pos="0.25 -0.1 {BLOCK_HALF}">
      <freejoint name="block"/>
      <geom name="block" type="box" size="{_fmt([BLOCK_HALF] * 3)}" mass="{BLOCK_MASS}"
            rgba="0.85 0.15 0.1 1" friction="1.0 0.005 0.0001" solref="0.004 1"
            solimp="0.95 0.99 0.001"/>
    </body>
    <body name="sorter" pos="0.27 0.13 0">
      {_sorter_geoms()}
    </body>
  </worldbody>
  <actuator>
    {servos}
    <position class="finger" name="{left}" joint="{left}" ctrlrange="{f_lo} {f_hi}"/>
    <position class="finger" name="{right}" joint="{right}" ctrlrange="{-f_hi} {-f_lo}"/>
  </actuator>
</mujoco>
"""


def _as_vec3(value, name) -> np.ndarray:
    v = np.asarray(value, dtype=float)
    if v.shape != (3,) or not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must be 3 finite numbers (x, y, z in metres), got {value!r}")
    return v


def block_in_box(block_pos, hole_xy) -> bool:
    """Apply the success test: the block's centre is inside the box's cavity, below the lid."""
    d = np.abs(np.asarray(block_pos[:2], float) - np.asarray(hole_xy, float))
    return bool(np.all(d < CAVITY_HALF) and block_pos[2] < BOX_TOP - LID - BLOCK_HALF + 0.002)


def expert_action_from_observation(obs, max_ee_step_m: float = 0.015,
                                   workspace_min_z: float = 0.02,
                                   observation_names=OBSERVATION_NAMES,
                                   speed: float = EXPERT_SPEED) -> np.ndarray:
    """Scripted expert acting on the observation alone (reactive: any state -> an action).

    Phases: above the block, descend (gripper open), grasp, lift, over the hole, lower the block
    into the hole, release. Moves at most ``speed`` (a fraction of ``max_ee_step_m``) per tick.
    Actions lie in [-1, 1].
    """
    o = dict(zip(observation_names, np.asarray(obs, dtype=float)))
    ee = np.array([o["ee_x"], o["ee_y"], o["ee_z"]])
    block = np.array([o["block_x"], o["block_y"], o["block_z"]])
    hole = np.array([o["hole_x"], o["hole_y"]])
    opening = o["gripper_opening"]

    def act(waypoint, gripper):
        move = (np.asarray(waypoint) - ee) / max_ee_step_m
        norm = float(np.linalg.norm(move))
        if norm > speed:                       # keep the direction, cap the speed
            move *= speed / norm
        return np.array([*np.clip(move, -1.0, 1.0), gripper])

    if block_in_box(block, hole):
        return act(ee, -1.0)
    rel = block - ee
    dist_xy = float(np.linalg.norm(rel[:2]))
    gripping = (abs(opening - 2 * BLOCK_HALF) < 0.004 and dist_xy < 0.015
                and -0.03 < rel[2] < 0.01)
    if gripping:
        d = hole - block[:2]
        dn = float(np.linalg.norm(d))
        lowering = ee[2] < CARRY_Z - 0.01 and dn < 0.008
        if dn > 0.02 and ee[2] < CARRY_Z - 0.015:
            return act([ee[0], ee[1], CARRY_Z], 1.0)                 # lift
        if dn > 0.004 and not lowering:
            return act([ee[0] + d[0], ee[1] + d[1], CARRY_Z], 1.0)   # over the hole
        block_bottom = block[2] - BLOCK_HALF
        if block_bottom < BOX_TOP - 0.003 or ee[2] < FINGER_SAFE_Z + 0.001:
            return act([ee[0] + d[0], ee[1] + d[1], ee[2]], -1.0)    # release
        z = max(ee[2] - (block_bottom - (BOX_TOP - 0.005)), FINGER_SAFE_Z)
        return act([ee[0] + d[0], ee[1] + d[1], z], 1.0)             # lower into the hole
    grasp_z = max(block[2] + GRASP_DZ, workspace_min_z + 0.001)
    hover_z = block[2] + HOVER_DZ
    if dist_xy > 0.005:
        if ee[2] < block[2] + 0.03 and dist_xy > 0.01:
            return act([ee[0], ee[1], hover_z], -1.0)                 # clear the block first
        z = hover_z if dist_xy > 0.01 else ee[2]
        return act([block[0], block[1], z], -1.0)                    # above the block
    if abs(ee[2] - grasp_z) < 0.004:
        if opening < 2 * BLOCK_HALF - 0.005:                         # closed on nothing
            return act([block[0], block[1], hover_z], -1.0)
        return act([block[0], block[1], grasp_z], 1.0)               # grasp
    if opening < 2 * BLOCK_HALF + 0.012:
        return act([block[0], block[1], ee[2]], -1.0)                # open before descending
    return act([block[0], block[1], grasp_z], -1.0)                  # descend


class WidowXTask:
    """wx250s block-through-the-hole task; see the module docstring."""

    action_names = list(ACTION_NAMES)

    def __init__(self, seed: int = 0, control_rate_hz: float = 20.0, max_ee_step_m: float = 0.015,
                 workspace_min_m=(0.12, -0.30, 0.02), workspace_max_m=(0.45, 0.30, 0.35),
                 episode_timeout_s: float = 15.0, physics_dt_s: float = 0.002,
                 kinematics_path=None):
        positive = {"control_rate_hz": control_rate_hz, "max_ee_step_m": max_ee_step_m,
                    "episode_timeout_s": episode_timeout_s, "physics_dt_s": physics_dt_s}
        for name, value in positive.items():
            if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                    or not np.isfinite(value) or value <= 0):
                raise ValueError(f"{name} must be a finite positive number, got {value!r}")
        self.workspace_min = _as_vec3(workspace_min_m, "workspace_min_m")
        self.workspace_max = _as_vec3(workspace_max_m, "workspace_max_m")
        if np.any(self.workspace_min >= self.workspace_max):
            raise ValueError(f"workspace_min_m {workspace_min_m!r} must be below workspace_max_m "
                             f"{workspace_max_m!r} on every axis")
        self.kin = load_kinematics(kinematics_path)
        self.control_rate_hz = float(control_rate_hz)
        self.dt = 1.0 / self.control_rate_hz
        self.substeps = max(1, int(np.ceil(self.dt / physics_dt_s - 1e-9)))
        self.max_ee_step_m = float(max_ee_step_m)
        self.episode_timeout_s = float(episode_timeout_s)
        self.max_episode_steps = max(1, int(round(self.episode_timeout_s * self.control_rate_hz)))
        self.observation_names = list(OBSERVATION_NAMES)
        self.joint_names = list(self.kin.arm_joints) + list(self.kin.gripper_joints)

        self.model = mujoco.MjModel.from_xml_string(build_mjcf(self.kin, self.dt / self.substeps))
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._qadr = np.array([m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n)]
                               for n in self.joint_names])
        self._block_qadr = m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "block")]
        self._block_body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "block")
        self._sorter_body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "sorter")
        self._ee_site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "ee")
        self._renderer = None
        self._rng = np.random.default_rng(seed)
        self.reset(seed)

    # --- episode ----------------------------------------------------------------------------
    def reset(self, seed=None):
        """Start a new episode.

        Random block and box positions, arm above the table, gripper open.
        """
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
                raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
            self._rng = np.random.default_rng(int(seed))
        rng = self._rng
        side = 1.0 if rng.random() < 0.5 else -1.0
        block_xy = np.array([rng.uniform(*BLOCK_RANGE_X), -side * rng.uniform(*BLOCK_RANGE_Y)])
        self._hole = np.array([rng.uniform(*BOX_RANGE_X), side * rng.uniform(*BOX_RANGE_Y)])
        start = np.asarray(START_EE) + rng.uniform(-1.0, 1.0, 3) * np.asarray(START_EE_JITTER)
        start = np.clip(start, self.workspace_min, self.workspace_max)

        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        m.body_pos[self._sorter_body] = [self._hole[0], self._hole[1], 0.0]
        ik = self.kin.ik(start)
        self._q_target = ik.q.copy()
        self._ee_target = start if ik.converged else self.kin.fk(ik.q)[:3, 3]
        self._gripper = -1.0
        d.qpos[self._qadr[:6]] = ik.q
        fingers = self._finger_targets(self._gripper)
        d.qpos[self._qadr[6:]] = fingers
        d.qpos[self._block_qadr:self._block_qadr + 7] = [*block_xy, BLOCK_HALF + 1e-4, 1, 0, 0, 0]
        d.ctrl[:6] = ik.q
        d.ctrl[6:] = fingers
        mujoco.mj_forward(m, d)
        mujoco.mj_step(m, d, nstep=self.substeps)   # let the block settle
        d.time = 0.0
        self.tick = 0
        self._success = False
        return self._observation(), {"success": False, "hole": self._hole.copy(),
                                     "ee_target": self._ee_target.copy()}

    def _finger_targets(self, gripper: float) -> np.ndarray:
        # Finger joint = distance of the finger from the gripper's centre line (left +, right -,
        # as the Interbotix joint states report them): the larger end of the range is open.
        f_lo, f_hi = self.kin.finger_range_m
        q = f_hi + (gripper + 1.0) / 2.0 * (f_lo - f_hi)
        return np.array([q, -q])

    def step(self, action):
        """Apply one control tick; returns (obs, reward, terminated, truncated, info)."""
        a = np.asarray(action, dtype=float)
        if a.shape != (4,):
            raise ValueError(f"action must have 4 values {self.action_names}, got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action contains non-finite values: {a.tolist()} "
                             f"(names {self.action_names})")
        clipped = np.clip(a, -1.0, 1.0)
        clamped_action = bool(np.any(clipped != a))
        wanted = self._ee_target + clipped[:3] * self.max_ee_step_m
        target = np.clip(wanted, self.workspace_min, self.workspace_max)
        clamped_workspace = bool(np.any(target != wanted))
        ik = self.kin.ik(target, self._q_target, max_iter=30)
        clamped_reach = not ik.converged
        if clamped_reach:        # out of reach: stay where the arm can actually go
            target = self.kin.fk(ik.q)[:3, 3]
        at_limit = bool(np.any(np.isclose(ik.q, self.kin.lower, atol=1e-9, rtol=0)
                               | np.isclose(ik.q, self.kin.upper, atol=1e-9, rtol=0)))
        self._ee_target, self._q_target, self._gripper = target, ik.q, float(clipped[3])
        info = {"clamped": clamped_action or clamped_workspace or clamped_reach,
                "clamped_action": clamped_action, "clamped_workspace": clamped_workspace,
                "clamped_reach": clamped_reach, "joint_at_limit": at_limit}
        return self._advance(info)

    def hold(self):
        """One control tick that keeps the current targets (arm and gripper) unchanged."""
        return self._advance({"clamped": False, "clamped_action": False,
                              "clamped_workspace": False, "clamped_reach": False,
                              "joint_at_limit": False})

    def _advance(self, info):
        d = self.data
        d.ctrl[:6] = self._q_target
        d.ctrl[6:] = self._finger_targets(self._gripper)
        mujoco.mj_step(self.model, d, nstep=self.substeps)
        self.tick += 1
        obs = self._observation()
        success = block_in_box(self._block_pos(), self._hole)
        self._success = self._success or success
        truncated = not success and self.tick >= self.max_episode_steps
        info.update(success=success, tick=self.tick, ee_target=self._ee_target.copy())
        return obs, float(success), success, truncated, info

    # --- state --------------------------------------------------------------------------------
    def _block_pos(self) -> np.ndarray:
        return self.data.qpos[self._block_qadr:self._block_qadr + 3].copy()

    def gripper_opening(self) -> float:
        """Gap between the finger pads (m): ~0.006 closed .. 0.05 open."""
        q_left, q_right = self.data.qpos[self._qadr[6:]]
        return float(q_left - q_right - 2 * PAD_INSET)

    def _observation(self) -> np.ndarray:
        ee, block = self.data.site_xpos[self._ee_site], self._block_pos()
        return np.array([*ee, self.gripper_opening(), *block, *self._hole, *(block - ee),
                         *(self._hole - block[:2])], dtype=np.float64)

    def observation(self) -> np.ndarray:
        return self._observation()

    def expert_action(self) -> np.ndarray:
        """Return the scripted expert's action for the current state (in [-1, 1])."""
        return expert_action_from_observation(self._observation(), self.max_ee_step_m,
                                              float(self.workspace_min[2]))

    def joint_positions(self) -> np.ndarray:
        """Positions of ``joint_names``: 6 arm joints (rad), then left/right finger (m)."""
        return self.data.qpos[self._qadr].copy()

    def ee_pose(self):
        """End-effector (ee_gripper_link) pose in the base frame: (pos[3], quat wxyz[4])."""
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, self.data.site_xmat[self._ee_site])
        return self.data.site_xpos[self._ee_site].copy(), quat

    @property
    def joint_targets(self) -> np.ndarray:
        """The arm's 6 joint position targets (from IK, within the joint limits)."""
        return self._q_target.copy()

    @property
    def ee_target(self) -> np.ndarray:
        return self._ee_target.copy()

    @property
    def hole_position(self) -> np.ndarray:
        return np.array([*self._hole, BOX_TOP])

    @property
    def success(self) -> bool:
        return self._success

    # --- rendering ----------------------------------------------------------------------------
    def render(self, width: int = 96, height: int = 96) -> np.ndarray:
        """uint8 RGB image [height, width, 3] from the fixed workspace camera."""
        g = self.model.vis.global_
        for name, v, cap in (("width", width, g.offwidth), ("height", height, g.offheight)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= cap:
                raise ValueError(f"render {name} must be an integer in [1, {cap}], got {v!r}")
        r = self._renderer
        if r is None or (r.width, r.height) != (width, height):
            if r is not None:
                r.close()
            self._renderer = r = mujoco.Renderer(self.model, height=int(height), width=int(width))
        r.update_scene(self.data, camera="workspace")
        return r.render()

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
