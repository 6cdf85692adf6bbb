"""Episode bags: writing and reading rosbag2 episodes with the pure-Python `rosbags` library.

ROS-free. One bag per episode under `<out>/iter<N>/episode_<index>_<utc>/`, rosbag2 version 8
(opens on Humble and later), MCAP storage by default, sqlite3 as an option. A bag holds the step
topics of one episode (observation, action_robot, action_human, intervention, ee_pose, episode
events, and the camera images unless they are off), each message logged at its arrival time and
carrying its header stamp. The episode's metadata goes into the bag's custom metadata, which
rosbags writes only at close, together with `metadata.yaml` (written last, atomically): a bag
directory without `metadata.yaml` is an episode cut short by a crash (or a failed write), and its
messages flushed so far can still be read (`read_episode` returns it with `complete=False`;
`load_episodes` skips it with a warning unless asked to use it).

Layers, lowest first (codec <- writer <- recorder; codec <- index <- reader <- loading; no module
imports this package or one above it):
- `codec`: format constants, `BagError`, typestore and tolerant CDR (de)serialization, topic names.
- `writer`: `EpisodeBagWriter`, one bag (`.write(topic, msg, stamp_ns)`, `.flush()`,
  `.close(metadata)`), and the output-directory checks.
- `recorder`: `EpisodeRecorder`, the recorder node's threaded core (it also asks `index` which
  bags of its directory are incomplete when it starts).
- `index`: finding bags and their state (`find_episode_bags`, `bag_state`, `scan_mcap`).
- `reader`: `read_episode` -> `EpisodeData`, `read_bag_episodes`, for the trainer and tools; they
  also read bags of the same topics recorded by `ros2 bag record`.
- `loading`: `load_episodes`, every episode under directories of bags (the trainer's input), a
  shared-domain bag read per named robot.
The `<out>/iterN` naming lives in `mile_ros.runs`.
"""
from mile_ros.bags.codec import (
                                 BAG_VERSION,
                                 FORMAT_KEY,
                                 FORMAT_VERSION,
                                 HEADER_TYPES,
                                 STORAGE_SUFFIXES,
                                 STORAGES,
                                 BagError,
                                 bag_topic,
                                 clean_cdr,
                                 deserialize,
                                 header_stamp_ns,
                                 topic_types,
                                 typestore,
)
from mile_ros.bags.index import bag_state, find_episode_bags, scan_mcap
from mile_ros.bags.loading import load_episodes
from mile_ros.bags.reader import (
                                 REQUIRED_TOPICS,
                                 EpisodeData,
                                 SharedBagError,
                                 read_bag_episodes,
                                 read_episode,
)
from mile_ros.bags.recorder import SIDECAR_LOG, SUMMARY_KEYS, EpisodeRecorder
from mile_ros.bags.writer import EpisodeBagWriter, check_writable, episode_bag_name
from mile_ros.runs import ITER_RE, iteration_dir

__all__ = [
    "BAG_VERSION", "FORMAT_KEY", "FORMAT_VERSION", "HEADER_TYPES", "ITER_RE", "REQUIRED_TOPICS",
    "SIDECAR_LOG", "STORAGES", "STORAGE_SUFFIXES", "SUMMARY_KEYS", "BagError", "EpisodeBagWriter",
    "SharedBagError",
    "EpisodeData", "EpisodeRecorder", "bag_state", "bag_topic", "check_writable", "clean_cdr",
    "deserialize", "episode_bag_name", "find_episode_bags", "header_stamp_ns", "iteration_dir",
    "load_episodes", "read_bag_episodes", "read_episode", "scan_mcap", "topic_types", "typestore",
]
