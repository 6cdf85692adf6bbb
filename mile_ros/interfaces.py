"""The graph's contract: topic names, message types and their conversions. Standard types only.

Every topic is relative, so nodes started in the namespace `/<robot_name>` keep two robots apart on
one ROS domain. A *named vector* (state, actions, the arbiter's flags) travels as
`sensor_msgs/JointState`: `name` holds the dimension names, `position` the values, and the header
stamp is the control tick's stamp, carried unchanged from the observation through a_r, a_h, the
flags and the command.

One control tick t:  arm publishes OBSERVATION(t) -> policy_server publishes ACTION_ROBOT(t) ->
arbiter publishes INTERVENTION(t) (nu, hold, estop), ACTION_HUMAN(t) (only when nu=1) and
COMMAND(t) -> arm applies COMMAND(t) and, when its backend counts the commands it refuses (the real
arm: unreachable by IK, too fast a joint step, refused by the driver), publishes ARM_REFUSED(t).
The recorder writes every one of them.
"""
from __future__ import annotations

import json
import math
from typing import Any, Sequence

import numpy as np

# --- topics (relative; resolved inside /<robot_name>) -------------------------------------------
JOINT_STATES = "joint_states"          # sensor_msgs/JointState   arm joints + gripper fingers
EE_POSE = "ee_pose"                    # geometry_msgs/PoseStamped  end-effector in the base frame
OBSERVATION = "observation"            # sensor_msgs/JointState   the policy's state vector, tick t
IMAGE = "camera/image_raw"             # sensor_msgs/Image        rgb8
JOY = "joy"                            # sensor_msgs/Joy          PS3 controller (or sim_human)
ACTION_ROBOT = "action_robot"          # sensor_msgs/JointState   a_r(t), stamped with obs(t)
ACTION_HUMAN = "action_human"          # sensor_msgs/JointState   a_h(t), only when nu(t)=1
INTERVENTION = "intervention"          # sensor_msgs/JointState   FLAG_NAMES, stamped with obs(t)
COMMAND = "command"                    # sensor_msgs/JointState   executed action (clamped)
# ARM_REFUSED(t): 1.0 when the arm refused COMMAND(t) (held instead), else 0.0; every tick, and
# only from a backend that counts refusals (the real arm, not the simulated one)
ARM_REFUSED = "arm/refused"            # sensor_msgs/JointState   REFUSED_NAMES, tick t
ARBITER_STATUS = "arbiter/status"      # std_msgs/String          human-readable state and reasons
EPISODE = "episode"                    # std_msgs/String          JSON episode events (below)
CHECKPOINT = "policy/checkpoint"       # std_msgs/UInt8MultiArray checkpoint tar, signature (below)
POLICY_ACTIVE = "policy/active"        # std_msgs/String          JSON {id, state, reason[, offer]}
SIM_EXPERT_ACTION = "sim/expert_action"  # sensor_msgs/JointState  the sim arm's expert, tick t
RECORDER_STATUS = "recorder/status"    # std_msgs/String          JSON recorder events

FLAG_NAMES = ("nu", "hold", "estop")
REFUSED_NAMES = ("refused",)

# Topics every episode bag holds, with their ROS type names (the recorder writes exactly these,
# plus IMAGE when images are recorded; the trainer requires the first four).
STEP_TOPICS = {
    OBSERVATION: "sensor_msgs/msg/JointState",
    ACTION_ROBOT: "sensor_msgs/msg/JointState",
    INTERVENTION: "sensor_msgs/msg/JointState",
    COMMAND: "sensor_msgs/msg/JointState",
    ACTION_HUMAN: "sensor_msgs/msg/JointState",
    EE_POSE: "geometry_msgs/msg/PoseStamped",
    JOINT_STATES: "sensor_msgs/msg/JointState",
    ARM_REFUSED: "sensor_msgs/msg/JointState",
    EPISODE: "std_msgs/msg/String",
}
IMAGE_TYPE = "sensor_msgs/msg/Image"


# --- stamps -------------------------------------------------------------------------------------
def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int, stamp_cls=None):
    if stamp_cls is None:
        from builtin_interfaces.msg import Time as stamp_cls
    return stamp_cls(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


# --- named vectors ------------------------------------------------------------------------------
def vector_msg(names: Sequence[str], values: Sequence[float], stamp_ns: int, frame_id: str = ""):
    """Build a sensor_msgs/JointState carrying a named vector."""
    from sensor_msgs.msg import JointState

    values = [float(v) for v in values]
    if len(values) != len(names):
        raise ValueError(f"vector has {len(values)} values for {len(names)} names")
    msg = JointState()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.name = list(names)
    msg.position = values
    return msg


def vector_from_msg(msg, names: Sequence[str] | None = None) -> np.ndarray:
    """Values of a named-vector JointState, reordered to `names` when given."""
    values = np.asarray(msg.position, dtype=np.float64)
    if names is None:
        return values
    index = {n: i for i, n in enumerate(msg.name)}
    missing = [n for n in names if n not in index]
    if missing:
        raise ValueError(f"message lacks dimensions {missing}; has {list(msg.name)}")
    return values[[index[n] for n in names]]


def all_finite(values: Any) -> bool:
    return all(math.isfinite(float(v)) for v in values)


# --- episode events (std_msgs/String, JSON) ------------------------------------------------------
# {"event": "start", "episode": int, "iteration": int, "stamp_ns": int, "seed": int|null}
# {"event": "end",   "episode": int, "success": bool|null, "reason": "success"|"timeout"|
#                    "button"|"shutdown"|..., "stamp_ns": int}
EPISODE_EVENTS = ("start", "end")


def episode_event(event: str, episode: int, stamp_ns: int, **fields) -> str:
    if event not in EPISODE_EVENTS:
        raise ValueError(f"episode event must be one of {EPISODE_EVENTS}, got {event!r}")
    return json.dumps({"event": event, "episode": int(episode), "stamp_ns": int(stamp_ns),
                       **fields})


def parse_episode_event(text: str) -> dict:
    data = json.loads(text)
    if data.get("event") not in EPISODE_EVENTS or "episode" not in data:
        raise ValueError(f"not an episode event: {text[:200]!r}")
    return data


# --- the policy server's answers on POLICY_ACTIVE: JSON {"id", "state", "reason"} ----------------
ACTIVE = "active"      # `id` is the policy running now (re-announced after every change); with
#                        `offer`: the answer to an offer of the checkpoint it already runs
PENDING = "pending"    # checkpoint `id` validated: it runs from the next episode start
REFUSED = "refused"    # checkpoint `id` failed a check (`reason`); the running policy stays
POLICY_STATES = (ACTIVE, PENDING, REFUSED)


def policy_answer(policy_id: str, state: str, reason: str = "", offer: str | None = None) -> str:
    """Return the JSON text of one POLICY_ACTIVE message.

    `offer`: for a pending/refused answer, `offer_digest` of the bytes it answers, so that a
    sender tells its own answer from an older one about the same checkpoint id.
    """
    if state not in POLICY_STATES:
        raise ValueError(f"policy state must be one of {POLICY_STATES}, got {state!r}")
    answer = {"id": policy_id, "state": state, "reason": reason}
    return json.dumps(answer if offer is None else {**answer, "offer": offer})


def offer_digest(data: bytes, signature: str | None = None, nonce: str | None = None) -> str:
    """Name one offer on CHECKPOINT: its bytes, signature and nonce (a sha256 prefix).

    The signature is part of the offer: the same bytes offered unsigned by one publisher (a
    misconfigured checkpoint store) and signed by another (`train --key-file`) get two answers,
    and each sender takes its own. So is the nonce each publication carries (`new_offer_nonce`):
    the same bytes offered again get a new name, and an answer to the earlier offer, arriving
    late from the server's transient-local history, is not taken for the answer to this one.
    """
    import hashlib

    digest = hashlib.sha256(data)
    if signature:
        digest.update(b"\0" + signature.encode())
    if nonce:
        digest.update(b"\1" + nonce.encode())
    return digest.hexdigest()[:16]


def new_offer_nonce() -> str:
    """Return a fresh nonce for one publication of a checkpoint (`checkpoint_msg`)."""
    import secrets

    return secrets.token_hex(8)


def parse_policy_answer(text: str) -> dict | None:
    """Return a POLICY_ACTIVE message's fields, or None when it is not one."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("state") in POLICY_STATES else None


# --- checkpoints on CHECKPOINT: the archive in `data`, its signature beside it ------------------
# layout.dim[0].label = "hmac-sha256:<hex>" (mile_ros.policy.signing) over exactly `data`; an
# unsigned checkpoint has no signature dimension. A last dimension labelled "offer:<hex>" (size 0)
# carries the publication's nonce (`offer_digest`). Readers that do not check them ignore the
# layout.
OFFER_LABEL = "offer:"


def checkpoint_msg(data: bytes, signature: str | None = None, nonce: str | None = None):
    """Build the std_msgs/UInt8MultiArray that carries checkpoint bytes (signature, nonce)."""
    import array

    from std_msgs.msg import MultiArrayDimension, UInt8MultiArray

    msg = UInt8MultiArray()
    msg.data = array.array("B", data)
    dims = []
    if signature:
        size = min(len(data), 0xFFFFFFFF)   # uint32
        dims.append(MultiArrayDimension(label=signature, size=size, stride=size))
    if nonce:
        dims.append(MultiArrayDimension(label=OFFER_LABEL + nonce, size=0, stride=0))
    msg.layout.dim = dims
    return msg


def checkpoint_signature(msg) -> str | None:
    """Return the signature a CHECKPOINT message carries (its first label), or None (unsigned)."""
    return next((dim.label for dim in msg.layout.dim
                 if dim.label and not dim.label.startswith(OFFER_LABEL)), None)


def checkpoint_nonce(msg) -> str | None:
    """Return the nonce of a CHECKPOINT message's publication, or None (a sender without one)."""
    return next((dim.label[len(OFFER_LABEL):] for dim in msg.layout.dim
                 if dim.label.startswith(OFFER_LABEL)), None)


# --- QoS profiles (rclpy imported only when a profile is asked for) ------------------------------
CONTROL_DEPTH = 1000   # control-path queues: a 2-core machine can stall a process for a second


def _qos(depth: int, latched: bool = False):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    durability = DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                      history=HistoryPolicy.KEEP_LAST, durability=durability)


def episode_qos():
    """EPISODE: reliable, transient local (a late joiner still sees the current episode)."""
    return _qos(20, latched=True)


def status_qos():
    """ARBITER_STATUS: reliable, transient local."""
    return _qos(10, latched=True)


def active_qos():
    """POLICY_ACTIVE: reliable, transient local.

    The last message is always the running policy, the ones before it say what happened to offered
    checkpoints.
    """
    return _qos(10, latched=True)


def active_reader_qos():
    """Return the QoS of a reader that only needs the running policy (the recorder)."""
    return _qos(1, latched=True)


def checkpoint_qos():
    """CHECKPOINT: reliable, transient local, one message (the newest checkpoint).

    Publishers and the policy server's subscription alike: a server that starts late takes the
    newest checkpoint of every publisher's history (`train` while it waits, a checkpoint_store
    always). Every publisher must be transient local: DDS matches a transient-local
    subscription only with transient-local publishers, and a volatile one reaches no server.
    """
    return _qos(1, latched=True)


def control_qos(depth: int = CONTROL_DEPTH):
    """Control-path topics (observation, a_r, flags): reliable, volatile, deep queues."""
    return _qos(depth)


def image_qos():
    """IMAGE readers: reliable, volatile, 120 frames (seconds of camera at 30 Hz)."""
    return _qos(120)
