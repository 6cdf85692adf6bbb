"""Delivering a checkpoint to robots' policy servers over ROS, and reading their answers.

The checkpoint's bytes go out on /<robot_name>/policy/checkpoint (reliable, transient local, one
message: a policy server that starts while the trainer still waits gets them from the history),
signed when the trainer has a key (`mile_ros.policy.signing`; the signature rides in the same
message, `interfaces.checkpoint_msg`); each policy server answers on its policy/active
(`mile_ros.interfaces.policy_answer`): "pending" (validated; it runs from the next episode start),
"active" (it already runs these bytes) or "refused" (with the reason). The sender is one node in
a context of its own, started through the nodes' one start-up path (`nodes._runtime`), with one
publisher and one reader per robot: the bytes go to every robot at once and the answers are
awaited together, under one deadline.

Exit status of a delivery to several robots (`fleet_status`): 0 when every robot accepted,
EXIT_REFUSED (1) when any refused -- it outranks a missing answer, since a refusal needs a person
(a bad checkpoint, a station with another key or another arm), while a silent station may only be
off and catches up when it comes back (README "Fleet") -- else EXIT_NO_ANSWER (4) when any did
not answer.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mile_ros import interfaces as itf

EXIT_REFUSED, EXIT_NO_ANSWER = 1, 4
NO_ANSWER = "none"
SETTLE_S = 3.0         # at most this long to discover the policy servers before sending


def _say(msg: str) -> None:
    print(f"train: {msg}", file=sys.stderr, flush=True)


@dataclass
class Answer:
    state: str                 # pending | active (it already runs it) | refused | none
    reason: str = ""
    seconds: float = 0.0       # from publishing to the answer
    active_id: str | None = None

    @property
    def accepted(self) -> bool:
        return self.state in (itf.PENDING, itf.ACTIVE)


class _Link:
    """One robot's checkpoint publisher and policy/active reader, on the sender's node."""

    def __init__(self, node, robot: str):
        from std_msgs.msg import String, UInt8MultiArray

        self.robot = robot.strip("/")
        self.pub = node.create_publisher(UInt8MultiArray, f"/{self.robot}/{itf.CHECKPOINT}",
                                         itf.checkpoint_qos())
        self.answers: list[tuple[float, dict]] = []
        self.sub = node.create_subscription(String, f"/{self.robot}/{itf.POLICY_ACTIVE}",
                                            self._on_active, itf.active_qos())
        self.topic = self.pub.topic_name

    def _on_active(self, msg) -> None:
        data = itf.parse_policy_answer(msg.data)
        if data is not None:
            self.answers.append((time.monotonic(), data))

    def heard(self) -> bool:
        """Return True once a policy server was discovered on both topics."""
        return bool(self.pub.get_subscription_count() and self.sub.get_publisher_count())

    def active_id(self) -> str | None:
        for _, a in reversed(self.answers):
            if a.get("state") == itf.ACTIVE:
                return a.get("id")
        return None

    def answer_in(self, seen: int, checkpoint_id: str, offer: str, size: int,
                  t_pub: float) -> Answer | None:
        """Return the answer to this offer among the answers from index `seen` on, or None."""
        for when, a in self.answers[seen:]:
            state, aid = a.get("state"), a.get("id")
            # "active" messages re-announce the running policy; the answer is pending/refused,
            # or "active" naming the offer (it already runs these bytes). A server that names the
            # offer answered these bytes; an older answer about the same id (its history,
            # arriving late under load) names other bytes.
            if "offer" in a and a["offer"] != offer:
                continue
            if aid == checkpoint_id and (state == itf.PENDING or
                                         (state == itf.ACTIVE and "offer" in a)):
                return Answer(state, a.get("reason", ""), when - t_pub, self.active_id())
            # how the server names an unreadable archive
            ours = aid in (checkpoint_id, f"<{size} bytes>") or "offer" in a
            if state == itf.REFUSED and ours:
                return Answer(itf.REFUSED, a.get("reason", ""), when - t_pub, self.active_id())
        return None

    def no_answer(self, wait_s: float) -> Answer:
        return Answer(NO_ANSWER, f"no policy server answered on {self.sub.topic_name} within "
                      f"{wait_s:g} s ({self.pub.get_subscription_count()} subscribers to "
                      f"{self.topic})", wait_s, self.active_id())


class CheckpointSender:
    """A ROS node that offers checkpoints on robots' policy/checkpoint, reading policy/active.

    `robot_names`: one robot (a name) or several. One per process; reusable for several
    checkpoints (the demo). `pub`, `sub`, `answers` and `topic` are the first robot's.
    """

    def __init__(self, robot_names: str | Sequence[str], ros_args: list[str] | None = None):
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        from mile_ros.nodes._runtime import open_context

        names = [robot_names] if isinstance(robot_names, str) else list(robot_names)
        names = list(dict.fromkeys(n.strip("/") for n in names))
        if not names:
            raise ValueError("CheckpointSender needs at least one robot name")
        self.context = open_context(["train", *(ros_args or [])])
        self.node = Node("trainer", namespace="/" + names[0] if len(names) == 1 else "/",
                         context=self.context, start_parameter_services=False)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.links = [_Link(self.node, n) for n in names]
        self.robots = names
        first = self.links[0]
        self.pub, self.sub, self.answers, self.topic = (first.pub, first.sub, first.answers,
                                                        first.topic)
        self._settled = False

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            self.executor.spin_once(timeout_sec=min(left, 0.05))

    def active_id(self, robot: str | None = None) -> str | None:
        """Return the policy `robot` (default: the first) announced running last, or None."""
        return self._link(robot).active_id()

    def _link(self, robot: str | None) -> _Link:
        if robot is None:
            return self.links[0]
        return next(link for link in self.links if link.robot == robot.strip("/"))

    def send(self, data: bytes, checkpoint_id: str, wait_s: float,
             signature: str | None = None) -> Answer:
        """Publish the bytes to the first robot; return its answer (see `send_all`)."""
        return self.send_all(data, checkpoint_id, wait_s, signature)[self.robots[0]]

    def send_all(self, data: bytes, checkpoint_id: str, wait_s: float,
                 signature: str | None = None) -> dict[str, Answer]:
        """Publish the bytes to every robot; wait (together, up to wait_s) for each answer.

        Returns {robot: Answer}: "pending" (accepted), "active" (it already runs them),
        "refused", or "none" (no answer in time). `signature`: `signing.sign(data, key)`, sent
        with the bytes (None: unsigned). Answers already on policy/active (its transient-local
        history) do not count.
        """
        t0 = time.monotonic()
        if not self._settled:
            self._settled = self._settle(min(wait_s, SETTLE_S))
        nonce = itf.new_offer_nonce()      # an answer to an earlier offer of the bytes is not ours
        msg = itf.checkpoint_msg(data, signature, nonce)
        offer = itf.offer_digest(data, signature, nonce)
        seen = {link.robot: len(link.answers) for link in self.links}
        t_pub = time.monotonic()
        for link in self.links:
            link.pub.publish(msg)
        answers: dict[str, Answer] = {}
        while True:
            for link in self.links:
                if link.robot not in answers:
                    got = link.answer_in(seen[link.robot], checkpoint_id, offer, len(data), t_pub)
                    seen[link.robot] = len(link.answers)
                    if got is not None:
                        answers[link.robot] = got
            left = t0 + wait_s - time.monotonic()
            if len(answers) == len(self.links) or left <= 0:
                return {link.robot: answers.get(link.robot) or link.no_answer(wait_s)
                        for link in self.links}
            self.executor.spin_once(timeout_sec=min(left, 0.05))

    def _settle(self, max_s: float) -> bool:
        """Wait (at most max_s) for the policy servers to be discovered, then take in history.

        The history each keeps on policy/active is taken in so that old answers are not mistaken
        for new ones. True once every robot's server was heard (later sends need not wait again).
        """
        end = time.monotonic() + max_s
        while time.monotonic() < end and not all(link.heard() for link in self.links):
            self.executor.spin_once(timeout_sec=0.05)
        if any(link.sub.get_publisher_count() for link in self.links):
            quiet_until = time.monotonic() + 0.3
            while time.monotonic() < min(quiet_until, end + 0.3):
                n = sum(len(link.answers) for link in self.links)
                self.executor.spin_once(timeout_sec=0.05)
                if sum(len(link.answers) for link in self.links) != n:
                    quiet_until = time.monotonic() + 0.3
        return all(link.sub.get_publisher_count() for link in self.links)

    def wait_active(self, checkpoint_id: str, timeout_s: float,
                    robot: str | None = None) -> float | None:
        """Seconds until the server announces `checkpoint_id` active, or None."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.active_id(robot) == checkpoint_id:
                return time.monotonic() - t0
            self.executor.spin_once(timeout_sec=0.05)
        return None

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def deliver(checkpoint_dir: Path, checkpoint_id: str, robot_names: str | Sequence[str],
            wait_s: float, ros_args: list[str] | None = None, say=_say,
            key: bytes | None = None) -> dict[str, Answer]:
    """Send the checkpoint (signed with `key`, unsigned without) to every robot -> {robot: answer}.

    All robots get the bytes at once; the answers are awaited together, up to `wait_s`.
    """
    from mile_ros.learning.checkpoint import checkpoint_to_bytes
    from mile_ros.policy.signing import SCHEME, sign

    data = checkpoint_to_bytes(checkpoint_dir)
    signature = sign(data, key) if key is not None else None
    sender = CheckpointSender(robot_names, ros_args)
    try:
        signed = f"signed ({SCHEME})" if signature else "unsigned (no --key-file)"
        topics = ", ".join(link.topic for link in sender.links)
        servers = "policy server" if len(sender.links) == 1 else \
            f"{len(sender.links)} robots' policy servers"
        say(f"sending {checkpoint_id} ({len(data) / 1e6:.2f} MB, {signed}) on {topics}; "
            f"waiting up to {wait_s:g} s for the {servers}")
        answers = sender.send_all(data, checkpoint_id, wait_s, signature)
    finally:
        sender.close()
    return answers


def report_answer(answer: Answer, checkpoint_id: str, say=_say, robot: str | None = None) -> int:
    """Say what `robot`'s policy server answered; return the exit status it stands for."""
    who = f"{robot}: " if robot else ""
    if answer.state == itf.PENDING:
        say(f"{who}policy server accepted {checkpoint_id} after {answer.seconds:.2f} s: it runs "
            f"from the next episode start ({answer.reason})")
        return 0
    if answer.state == itf.ACTIVE:
        say(f"{who}policy server accepted {checkpoint_id} after {answer.seconds:.2f} s: it "
            f"already runs it ({answer.reason})")
        return 0
    if answer.state == itf.REFUSED:
        say(f"{who}policy server REFUSED {checkpoint_id} after {answer.seconds:.2f} s: "
            f"{answer.reason}; it keeps running {answer.active_id or 'its current policy'}")
        return EXIT_REFUSED
    say(f"{who}WARNING: {answer.reason}; the checkpoint is saved -- start the policy server with "
        f"checkpoint:=<that directory>, run a checkpoint_store, or run train again while it runs")
    return EXIT_NO_ANSWER


def fleet_status(codes: Sequence[int]) -> int:
    """Return the exit status of a delivery to several robots: refused outranks no answer."""
    if EXIT_REFUSED in codes:
        return EXIT_REFUSED
    return EXIT_NO_ANSWER if EXIT_NO_ANSWER in codes else 0


def report_answers(answers: dict[str, Answer], checkpoint_id: str, say=_say) -> int:
    """Say each robot's answer (and, for several, a summary); return the fleet's exit status."""
    codes = {robot: report_answer(a, checkpoint_id, say, robot) for robot, a in answers.items()}
    status = fleet_status(list(codes.values()))
    if len(answers) > 1:
        words = {0: "accepted", EXIT_REFUSED: "REFUSED", EXIT_NO_ANSWER: "no answer"}
        say(f"delivered {checkpoint_id} to {len(answers)} robots: "
            + ", ".join(f"{robot} {words[c]}" for robot, c in codes.items())
            + f" (exit status {status})")
    return status
