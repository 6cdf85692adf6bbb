"""One episode while it is recorded, and the metadata its bag is sealed with."""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mile_ros.bags.writer import EpisodeBagWriter
from mile_ros.interfaces import ACTION_ROBOT, FLAG_NAMES, INTERVENTION, OBSERVATION


@dataclass
class _Episode:
    """State of one episode being recorded (writer thread only)."""

    index: int
    path: Path
    start_event: dict
    start_stamp: int | None
    writer: EpisodeBagWriter | None = None
    end_event: dict | None = None
    end_stamp: int | None = None
    end_reason: str | None = None
    close_at: float = 0.0                               # earliest close (monotonic)
    close_by: float = 0.0                               # latest close, whatever still arrives
    sealed_early: bool = False                          # ended by an end event: sealed promptly
    ended_at: float = 0.0                               # when its end was taken (monotonic)
    human_stamps: set = field(default_factory=set)      # stamps of the a_h written
    topics_seen: set = field(default_factory=set)
    max_lag_s: dict = field(default_factory=dict)       # topic -> max (arrival - header stamp)
    failed: str | None = None
    errors: list = field(default_factory=list)
    tick_bits: dict = field(default_factory=dict)      # stamp -> bits obs=1, a_r=2, nu=4
    flags: dict = field(default_factory=dict)          # stamp -> (nu, hold, estop)
    refused: dict = field(default_factory=dict)        # stamp -> the arm refused command(t)
    state_names: list | None = None
    action_names: list | None = None
    checkpoint_ids: list = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    opened_utc: str = ""
    end_checkpoint: str | None = None


_TICK_BITS = {OBSERVATION: 1, ACTION_ROBOT: 2, INTERVENTION: 4}


def episode_metadata(ep: _Episode, rec) -> dict:
    """Build the bag's custom metadata for episode `ep` of the recorder `rec`.

    Counts only ticks stamped inside the episode: complete ones (observation, a_r and flags),
    interventions, takeovers, holds, e-stops, the commands the arm refused (`ik_refusals`: ticks
    whose `arm/refused` flag is set; None when the arm reported no refusal flags, e.g. the
    simulated arm, which refuses nothing and counts nothing), the achieved rate against the
    configured one.
    """
    lo = ep.start_stamp if ep.start_stamp is not None else -math.inf
    hi = ep.end_stamp if ep.end_stamp is not None else math.inf
    bits = {s: b for s, b in ep.tick_bits.items() if lo <= s <= hi}
    ticks = sorted(s for s, b in bits.items() if b == 7)
    obs = sorted(s for s, b in bits.items() if b & 1)
    flags = [ep.flags[s] for s in ticks]
    nu = [f[0] for f in flags]
    flag_stamps = sorted(s for s in ep.flags if lo <= s <= hi)
    refused = [r for s, r in ep.refused.items() if lo <= s <= hi]
    estops = [s for i, s in enumerate(flag_stamps)
              if ep.flags[s][2] and (i == 0 or not ep.flags[flag_stamps[i - 1]][2])]
    event_rate = ep.start_event.get("control_rate_hz")
    rate = float(event_rate) if isinstance(event_rate, (int, float)) and event_rate > 0 \
        else rec.control_rate_hz
    achieved = (len(obs) - 1) / ((obs[-1] - obs[0]) * 1e-9) if len(obs) > 1 and \
        obs[-1] > obs[0] else 0.0
    end = ep.end_event or {}
    success = end.get("success")
    return {
        "iteration": rec.iteration, "episode": ep.index, "robot_name": rec.robot_name,
        "success": success if isinstance(success, bool) else None,
        "end_reason": ep.end_reason, "start_stamp_ns": ep.start_stamp,
        "end_stamp_ns": ep.end_stamp, "seed": ep.start_event.get("seed"),
        "ticks": len(ticks), "observations": len(obs),
        "incomplete_ticks": len(bits) - len(ticks),
        "stray_ticks_outside_stamps": len(ep.tick_bits) - len(bits),
        "intervention_count": int(sum(nu)),
        "intervention_rate": float(np.mean(nu)) if nu else 0.0,
        "takeover_count": int(sum(1 for i, v in enumerate(nu)
                                  if v and (i == 0 or not nu[i - 1]))),
        "hold_ticks": int(sum(f[1] for f in flags)),
        "estop_events": estops, "estop_count": len(estops),
        "ik_refusals": int(sum(refused)) if refused else None,
        "policy_checkpoint_id": ep.end_checkpoint or rec.checkpoint_id,
        "policy_checkpoint_ids": ep.checkpoint_ids,
        "control_rate_hz": rate, "achieved_rate_hz": round(achieved, 3),
        "min_rate_fraction": rec.min_rate_fraction,
        "low_rate": bool(len(obs) > 1 and achieved < rec.min_rate_fraction * rate),
        "state_names": ep.state_names or [], "action_names": ep.action_names or [],
        "flag_names": list(FLAG_NAMES),
        "message_counts": dict(ep.writer.counts) if ep.writer else {},
        "record_errors": ep.errors + ([ep.failed] if ep.failed else []),
        "dropped_messages": sum(ep.dropped.values()),
        "max_arrival_lag_s": {k: round(v, 4) for k, v in sorted(ep.max_lag_s.items())},
        "record_images": rec.record_images, "storage": rec.storage,
        "start_event": ep.start_event, "end_event": ep.end_event,
        "opened_utc": ep.opened_utc,
        "closed_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
