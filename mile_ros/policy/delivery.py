"""Delivering a checkpoint to a robot's policy server over ROS, and reading its answer.

The checkpoint's bytes go out on /<robot_name>/policy/checkpoint (reliable, transient local),
signed when the trainer has a key (`mile_ros.policy.signing`; the signature rides in the same
message, `interfaces.checkpoint_msg`); the policy server answers on policy/active
(`mile_ros.interfaces.policy_answer`): "pending" (validated; it runs from the next episode start)
or "refused" (with the reason). The sender is a node in a context of its own, started through the
nodes' one start-up path (`nodes._runtime`).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mile_ros import interfaces as itf

EXIT_REFUSED, EXIT_NO_ANSWER = 1, 4


def _say(msg: str) -> None:
    print(f"train: {msg}", file=sys.stderr, flush=True)


@dataclass
class Answer:
    state: str                 # pending | active | refused | none
    reason: str = ""
    seconds: float = 0.0       # from publishing to the answer
    active_id: str | None = None


class CheckpointSender:
    """A ROS node that offers checkpoints on policy/checkpoint and listens to policy/active.

    It lives in /<robot_name>. One per process; reusable for several checkpoints (the demo).
    """

    def __init__(self, robot_name: str, ros_args: list[str] | None = None):
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from std_msgs.msg import String, UInt8MultiArray

        from mile_ros.nodes._runtime import open_context

        self.context = open_context(["train", *(ros_args or [])])
        self.node = Node("trainer", namespace="/" + robot_name.strip("/"), context=self.context,
                         start_parameter_services=False)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.pub = self.node.create_publisher(UInt8MultiArray, itf.CHECKPOINT,
                                              itf.checkpoint_qos())
        self.answers: list[tuple[float, dict]] = []
        self._settled = False
        self.sub = self.node.create_subscription(String, itf.POLICY_ACTIVE, self._on_active,
                                                 itf.active_qos())
        self.topic = self.pub.topic_name

    def _on_active(self, msg) -> None:
        data = itf.parse_policy_answer(msg.data)
        if data is not None:
            self.answers.append((time.monotonic(), data))

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            self.executor.spin_once(timeout_sec=min(left, 0.05))

    def active_id(self) -> str | None:
        for _, a in reversed(self.answers):
            if a.get("state") == itf.ACTIVE:
                return a.get("id")
        return None

    def send(self, data: bytes, checkpoint_id: str, wait_s: float,
             signature: str | None = None) -> Answer:
        """Publish the bytes; wait for "pending" (accepted) or "refused" for this checkpoint.

        `signature`: `signing.sign(data, key)`, sent with the bytes (None: unsigned). Answers
        already on policy/active (its transient-local history) do not count.
        """
        t0 = time.monotonic()
        if not self._settled:
            self._settled = self._settle(min(wait_s, 3.0))
        baseline = len(self.answers)
        msg = itf.checkpoint_msg(data, signature)
        t_pub = time.monotonic()
        self.pub.publish(msg)
        unreadable_id = f"<{len(data)} bytes>"    # how the server names an unreadable archive
        offer = itf.offer_digest(data)
        seen = baseline
        while True:
            for when, a in self.answers[seen:]:
                state, aid = a.get("state"), a.get("id")
                # "active" messages re-announce the running policy; the answer is pending/refused.
                # A server that names the offer answered these bytes; an older answer about the
                # same id (its history, arriving late under load) names other bytes.
                if "offer" in a and a["offer"] != offer:
                    continue
                if aid == checkpoint_id and state == itf.PENDING:
                    return Answer(state, a.get("reason", ""), when - t_pub, self.active_id())
                ours = aid in (checkpoint_id, unreadable_id) or "offer" in a
                if state == itf.REFUSED and ours:
                    return Answer(itf.REFUSED, a.get("reason", ""), when - t_pub, self.active_id())
            seen = len(self.answers)
            left = t0 + wait_s - time.monotonic()
            if left <= 0:
                return Answer("none", f"no policy server answered on "
                              f"{self.node.get_namespace()}/policy/active within {wait_s:g} s "
                              f"({self.pub.get_subscription_count()} subscribers to {self.topic})",
                              wait_s, self.active_id())
            self.executor.spin_once(timeout_sec=min(left, 0.05))

    def _settle(self, max_s: float) -> bool:
        """Wait (at most max_s) for a policy server to be discovered, then take in its history.

        The history it keeps on policy/active is taken in so that old answers are not mistaken for
        new ones. True once a server was heard (later sends need not wait again).
        """
        end = time.monotonic() + max_s
        while time.monotonic() < end and not (self.pub.get_subscription_count() and
                                               self.sub.get_publisher_count()):
            self.executor.spin_once(timeout_sec=0.05)
        if self.sub.get_publisher_count():
            quiet_until = time.monotonic() + 0.3
            while time.monotonic() < min(quiet_until, end + 0.3):
                n = len(self.answers)
                self.executor.spin_once(timeout_sec=0.05)
                if len(self.answers) != n:
                    quiet_until = time.monotonic() + 0.3
        return bool(self.sub.get_publisher_count())

    def wait_active(self, checkpoint_id: str, timeout_s: float) -> float | None:
        """Seconds until the server announces `checkpoint_id` active, or None."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.active_id() == checkpoint_id:
                return time.monotonic() - t0
            self.executor.spin_once(timeout_sec=0.05)
        return None

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def deliver(checkpoint_dir: Path, checkpoint_id: str, robot_name: str, wait_s: float,
            ros_args: list[str] | None = None, say=_say, key: bytes | None = None) -> Answer:
    """Send the checkpoint (signed with `key`, unsigned without) and wait for the answer."""
    from mile_ros.learning.checkpoint import checkpoint_to_bytes
    from mile_ros.policy.signing import SCHEME, sign

    data = checkpoint_to_bytes(checkpoint_dir)
    signature = sign(data, key) if key is not None else None
    sender = CheckpointSender(robot_name, ros_args)
    try:
        signed = f"signed ({SCHEME})" if signature else "unsigned (no --key-file)"
        say(f"sending {checkpoint_id} ({len(data) / 1e6:.2f} MB, {signed}) on {sender.topic}; "
            f"waiting up to {wait_s:g} s for the policy server")
        answer = sender.send(data, checkpoint_id, wait_s, signature)
    finally:
        sender.close()
    return answer


def report_answer(answer: Answer, checkpoint_id: str, say=_say) -> int:
    if answer.state == itf.PENDING:
        say(f"policy server accepted {checkpoint_id} after {answer.seconds:.2f} s: it runs "
            f"from the next episode start ({answer.reason})")
        return 0
    if answer.state == itf.REFUSED:
        say(f"policy server REFUSED {checkpoint_id}: {answer.reason}; it keeps running "
            f"{answer.active_id or 'its current policy'}")
        return EXIT_REFUSED
    say(f"WARNING: {answer.reason}; the checkpoint is saved -- start the policy server with "
        f"checkpoint:=<that directory>, or run train again while it runs")
    return EXIT_NO_ANSWER
