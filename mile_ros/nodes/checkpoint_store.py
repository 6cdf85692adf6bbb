"""The checkpoint store: the trainer's newest checkpoint, always offered to every robot.

    ros2 run mile_ros checkpoint_store --ros-args -p checkpoints:=runs/lab/checkpoints
        -p "robot_names:=[r1, r2]" -p key_file:=$HOME/.config/mile_ros/fleet.key   (one line)

It runs on the trainer's machine for as long as the fleet does. `train` exits once the policy
servers answered, and its transient-local publication goes with it; the store keeps one: it
watches `<checkpoints>/latest` (written by `train`, mile_ros.learning.checkpoint.update_latest)
and publishes the checkpoint it names -- the bytes `train` sends (checkpoint_to_bytes), signed
with the key in `key_file` as `train --key-file` signs them (mile_ros.policy.signing; unsigned
without one) -- on /<robot>/policy/checkpoint of every robot in `robot_names`, reliable,
transient local, one message (interfaces.checkpoint_qos). A policy server that starts or
restarts later receives it from the DDS history at once and validates it like any delivery: a
station that was off during training runs the current policy when it comes back (from its first
episode), and one that already runs it or something newer keeps what it has. Each robot's
answer to the offer (policy/active, matched by the offer digest) is logged.

Parameters (config/collect.yaml, section checkpoint_store): `checkpoints`, the checkpoint root
(`train --out`, by default `<run dir>/checkpoints`); `robot_names`; `key_file`; `poll_period_s`,
how often `latest` is read. The root and its `latest` may appear after the store started.
"""
from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

from rclpy.node import Node

from mile_ros import interfaces as itf
from mile_ros.params import ConfigError, declare_node_parameters

NODE = "checkpoint_store"


def _valid_namespace(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c == "_" for c in name) and not name[0].isdigit()


class CheckpointStoreNode(Node):
    def __init__(self, context):
        super().__init__(NODE, context=context,
                         automatically_declare_parameters_from_overrides=True)
        from std_msgs.msg import String, UInt8MultiArray

        p = declare_node_parameters(self, NODE)
        if not p["checkpoints"]:
            raise ConfigError("checkpoint_store parameter 'checkpoints' is empty: name the "
                              "checkpoint root that train writes (train --out; by default "
                              "<run dir>/checkpoints)")
        self.root = Path(p["checkpoints"]).expanduser()
        self.robots = list(dict.fromkeys(str(n).strip("/") for n in p["robot_names"]))
        bad = [n for n in self.robots if not _valid_namespace(n)]
        if not self.robots or bad:
            raise ConfigError(f"checkpoint_store parameter 'robot_names' {p['robot_names']!r}: "
                              f"needs one or more valid ROS namespaces (not {bad})")
        if not p["poll_period_s"] > 0:
            raise ConfigError(f"checkpoint_store parameter 'poll_period_s' must be > 0, got "
                              f"{p['poll_period_s']}")
        self.key = self._read_key(p["key_file"])
        self.pubs = {r: self.create_publisher(UInt8MultiArray, f"/{r}/{itf.CHECKPOINT}",
                                              itf.checkpoint_qos()) for r in self.robots}
        for r in self.robots:
            self.create_subscription(String, f"/{r}/{itf.POLICY_ACTIVE}",
                                     partial(self._on_answer, r), itf.active_qos())
        self.served: tuple[str, str, str] | None = None     # (latest's name, id, offer)
        self._problem = ""
        self.get_logger().info(f"checkpoint_store: serving {self.root}/latest to "
                               f"{', '.join(self.robots)} ("
                               + ("signed with the key in " + p["key_file"] if self.key else
                                  "unsigned: no key_file") + ")")
        self.poll()
        self.create_timer(float(p["poll_period_s"]), self.poll)

    def _read_key(self, path: str) -> bytes | None:
        from mile_ros.policy.signing import loose_permissions, read_key

        if not path:
            return None
        key = read_key(path, "checkpoint_store parameter 'key_file'")
        warning = loose_permissions(path)
        if warning:
            self.get_logger().warning(f"checkpoint_store: {warning}")
        return key

    def _say_problem(self, text: str, warn: bool = True) -> None:
        """Log a problem once (until it changes): the store polls every period."""
        if text != self._problem:
            self._problem = text
            (self.get_logger().warning if warn else self.get_logger().info)(
                f"checkpoint_store: {text}")

    def poll(self) -> None:
        """Publish the checkpoint `latest` names, when it is not the one already published."""
        from mile_ros.learning.checkpoint import (
            LATEST,
            checkpoint_to_bytes,
            resolve_checkpoint,
            verify_checkpoint,
        )
        from mile_ros.policy.signing import SCHEME, sign

        pointer = self.root / LATEST
        try:
            name = pointer.read_text().strip()
        except FileNotFoundError:
            self._say_problem(f"no checkpoint yet: waiting for {pointer}", warn=False)
            return
        except OSError as e:
            self._say_problem(f"cannot read {pointer}: {e.strerror or e}")
            return
        if self.served is not None and self.served[0] == name:
            return
        try:
            path = resolve_checkpoint(self.root)
            checkpoint_id = verify_checkpoint(path)["id"]
            data = checkpoint_to_bytes(path)
        except (OSError, ValueError) as e:    # CheckpointError is a ValueError
            self._say_problem(f"{pointer} names {name!r}, which is not served: {e}")
            return
        signature = sign(data, self.key) if self.key is not None else None
        nonce = itf.new_offer_nonce()
        msg = itf.checkpoint_msg(data, signature, nonce)
        self.served = (name, checkpoint_id, itf.offer_digest(data, signature, nonce))
        self._problem = ""
        for pub in self.pubs.values():
            pub.publish(msg)
        self.get_logger().info(
            f"checkpoint_store: offering {checkpoint_id} ({len(data) / 1e6:.2f} MB, "
            f"{'signed (' + SCHEME + ')' if signature else 'unsigned'}) on "
            + ", ".join(pub.topic_name for pub in self.pubs.values()))

    def _on_answer(self, robot: str, msg) -> None:
        answer = itf.parse_policy_answer(msg.data)
        if answer is None or self.served is None or answer.get("offer") != self.served[2]:
            return
        state, log = answer.get("state"), self.get_logger()
        text = f"checkpoint_store: {robot}: {state} {answer.get('id')}: {answer.get('reason')}"
        (log.warning if state == itf.REFUSED else log.info)(text)


def main(argv: list[str] | None = None) -> int:
    from mile_ros.nodes._runtime import run_node

    return run_node(NODE, CheckpointStoreNode, argv)


if __name__ == "__main__":
    sys.exit(main())
