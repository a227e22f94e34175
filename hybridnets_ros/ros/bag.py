"""rosbag2 files without rosbag2: write image bags, replay bags with ``/clock``, record topics (``rosbags`` + rclpy).

Where ROS 2 is installed, ``ros2 bag play --clock`` and ``ros2 bag record`` do the same; these tools exist for
machines that only have the PyPI ROS wheels (tests, ``make demo``). Messages travel as their recorded CDR bytes
(``publish(raw_bytes)``, ``raw=True`` subscriptions), so nothing is deserialised on the way.

Command line::

    python -m hybridnets_ros.ros.bag play BAG [--rate 1.0] [--clock [HZ]] [--remap OLD:=NEW ...] [--loop]
                                             [--wait-subscribers S]
    python -m hybridnets_ros.ros.bag record OUT_BAG --topics T [T ...] [--duration S | --until-idle S]
                                              [--use-sim-time] [--storage sqlite3|mcap]

Both stop cleanly on SIGINT/SIGTERM (the recorder writes what it received and closes the bag) and keep DDS on this
host unless ROS_AUTOMATIC_DISCOVERY_RANGE says otherwise.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.subscription import Subscription
from rosbags.interfaces import (
    Connection,
    Nodetype,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore
from rosgraph_msgs.msg import Clock

from hybridnets_ros.cli_support import configure_logging
from hybridnets_ros.encodings import ENCODINGS, PIPELINE_ENCODINGS

LOG = logging.getLogger(__name__)

STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
BAG_VERSION = 9  # metadata version of rosbag2 in Jazzy and Kilted
CLOCK_TOPIC = "/clock"
DEFAULT_CLOCK_HZ = 40.0  # same default as `ros2 bag play --clock`
ACK_TIMEOUT_S = 10.0  # how long the player waits for reliable subscribers to acknowledge its last messages
IMAGE_TYPE = "sensor_msgs/msg/Image"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
NANOSECONDS = 1_000_000_000

_ZERO = QosTime(sec=0, nsec=0)
# What the writer of a generated bag "offered": reliable, volatile, keep last 10 (rclpy's default profile).
_DEFAULT_OFFERED_QOS = Qos(
    history=QosHistory.KEEP_LAST,
    depth=10,
    reliability=QosReliability.RELIABLE,
    durability=QosDurability.VOLATILE,
    deadline=_ZERO,
    lifespan=_ZERO,
    liveliness=QosLiveliness.AUTOMATIC,
    liveliness_lease_duration=_ZERO,
    avoid_ros_namespace_conventions=False,
)


# --- types -----------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def typestore() -> Typestore:
    """The ROS 2 Kilted type store; further types are registered on demand by :func:`ensure_types`."""
    return get_typestore(Stores.ROS2_KILTED)


def _msg_file(msgtype: str) -> Path | None:
    """The installed ``.msg`` definition of ``pkg/msg/Name`` (``<prefix>/share/pkg/msg/Name.msg``), if any."""
    package, _, name = msgtype.split("/")
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    for prefix in prefixes:
        candidate = Path(prefix) / "share" / package / "msg" / f"{name}.msg"
        if candidate.is_file():
            return candidate
    return None


def _referenced_types(fields: Sequence) -> Iterator[str]:
    """Names of the complex types that rosbags field definitions refer to (nested, arrays and sequences)."""
    for _, (kind, detail) in fields:
        if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            kind, detail = detail[0]
        if kind == Nodetype.NAME:
            yield detail


def ensure_types(store: Typestore, msgtypes: Iterable[str]) -> None:
    """Register every type in ``msgtypes`` that ``store`` lacks, and the types they use, from installed .msg files.

    This is how types outside the Kilted store (vision_msgs, custom interfaces) become writable into a bag.
    Raises KeyError naming the type when no definition is installed.
    """
    pending = [t for t in msgtypes if t not in store.types]
    found: dict = {}
    while pending:
        msgtype = pending.pop()
        if msgtype in found or msgtype in store.types:
            continue
        path = _msg_file(msgtype)
        if path is None:
            raise KeyError(f"no message definition for '{msgtype}': install its package or source its prefix")
        parsed = get_types_from_msg(path.read_text(), msgtype)
        found.update(parsed)
        for _, fields in parsed.values():
            pending.extend(_referenced_types(fields))
    if found:
        store.register(found)


def message_class(msgtype: str) -> type:
    """The rclpy message class of ``pkg/msg/Name``."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


# --- writing and reading ----------------------------------------------------------------------------------------


def write_image_bag(
    path: str | Path,
    frames: Iterable[np.ndarray],
    topic: str = "/camera/image_raw",
    frame_id: str = "camera",
    rate_hz: float = 10.0,
    encoding: str = "bgr8",
    *,
    start_ns: int | None = None,
    storage: str = "sqlite3",
    camera_info: dict | None = None,
) -> list[int]:
    """Write ``frames`` as ``sensor_msgs/Image`` messages at ``rate_hz``; returns their stamps in ns.

    frames: (H, W, C) or (H, W) uint8 arrays, C matching ``encoding`` (mono8 1, rgb8/bgr8 3, rgba8/bgra8 4).
    Header stamp and bag timestamp of frame i are both ``start_ns + i / rate_hz`` s (start: now by default).
    ``camera_info``: CameraInfo fields (width, height, distortion_model, d, k, r, p) to write with every frame, just
    before it and with its header, on the image topic's sibling ``camera_info`` (as camera drivers publish it).
    ``path`` must not exist yet (rosbag2 writes a directory).
    """
    if encoding not in PIPELINE_ENCODINGS:
        raise ValueError(f"unsupported encoding '{encoding}' (supported: {', '.join(PIPELINE_ENCODINGS)})")
    channels = ENCODINGS[encoding].channels
    store = typestore()
    image_cls, header_cls, time_cls = (
        store.types[t] for t in (IMAGE_TYPE, "std_msgs/msg/Header", "builtin_interfaces/msg/Time"))
    start = time.time_ns() if start_ns is None else start_ns
    stamps: list[int] = []
    with Writer(path, version=BAG_VERSION, storage_plugin=STORAGES[storage]) as writer:
        connection = writer.add_connection(
            topic, IMAGE_TYPE, typestore=store, offered_qos_profiles=[_DEFAULT_OFFERED_QOS])
        info_connection = None if camera_info is None else writer.add_connection(
            f"{topic.rpartition('/')[0]}/camera_info", CAMERA_INFO_TYPE, typestore=store,
            offered_qos_profiles=[_DEFAULT_OFFERED_QOS])
        for index, frame in enumerate(frames):
            frame = np.ascontiguousarray(frame, dtype=np.uint8)
            if frame.ndim == 2:
                frame = frame[:, :, None]
            height, width, frame_channels = frame.shape
            if frame_channels != channels:
                raise ValueError(f"frame {index} has {frame_channels} channels, {encoding} needs {channels}")
            stamp = start + round(index * NANOSECONDS / rate_hz)  # no drift over long bags
            header = header_cls(stamp=time_cls(sec=stamp // NANOSECONDS, nanosec=stamp % NANOSECONDS),
                                frame_id=frame_id)
            if info_connection is not None:
                writer.write(info_connection, stamp, store.serialize_cdr(
                    _camera_info_message(store, header, camera_info), CAMERA_INFO_TYPE))
            msg = image_cls(
                header=header,
                height=height,
                width=width,
                encoding=encoding,
                is_bigendian=0,
                step=width * channels,
                data=frame.reshape(-1),
            )
            writer.write(connection, stamp, store.serialize_cdr(msg, IMAGE_TYPE))
            stamps.append(stamp)
    return stamps


def _camera_info_message(store: Typestore, header: object, fields: dict) -> object:
    """A rosbags CameraInfo with ``header`` from CameraInfo ``fields`` (no binning, full-image ROI)."""
    info_cls, roi_cls = (store.types[t] for t in (CAMERA_INFO_TYPE, "sensor_msgs/msg/RegionOfInterest"))
    return info_cls(header=header, height=fields["height"], width=fields["width"],
                    distortion_model=fields["distortion_model"], d=np.asarray(fields["d"], np.float64),
                    k=np.asarray(fields["k"], np.float64), r=np.asarray(fields["r"], np.float64),
                    p=np.asarray(fields["p"], np.float64), binning_x=0, binning_y=0,
                    roi=roi_cls(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def read_messages(path: str | Path, topics: Sequence[str] | None = None) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, msgtype, bag timestamp ns, raw CDR bytes) of every message in bag order, optionally for ``topics``."""
    with Reader(path) as reader:
        connections = [c for c in reader.connections if topics is None or c.topic in topics]
        for connection, timestamp, raw in reader.messages(connections=connections):
            yield connection.topic, connection.msgtype, timestamp, bytes(raw)


# --- playing ----------------------------------------------------------------------------------------------------


def _running(node: Node, stop: threading.Event | None) -> bool:
    """False once ``stop`` is set or the node's context was shut down (rclpy's own signal handling)."""
    return rclpy.ok(context=node.context) and not (stop is not None and stop.is_set())


def _replay_qos(offered: Sequence[Qos]) -> QoSProfile:
    """Publisher QoS for a recorded topic: always reliable (reliable writers serve best-effort readers too, and
    best effort drops large frames), durability as recorded so latched topics such as label_info stay latched."""
    transient = bool(offered) and all(q.durability == QosDurability.TRANSIENT_LOCAL for q in offered)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=max([10] + [q.depth for q in offered]),
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if transient else DurabilityPolicy.VOLATILE,
    )


def _wait_for_subscribers(
        node: Node, publishers: Sequence[Publisher], timeout_s: float, stop: threading.Event | None) -> None:
    """Block until each publisher has a subscriber or ``timeout_s`` passes (then log the ones without)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _running(node, stop):
        if all(p.get_subscription_count() > 0 for p in publishers):
            return
        time.sleep(0.01)
    lonely = [p.topic_name for p in publishers if p.get_subscription_count() == 0]
    if lonely:
        LOG.warning("no subscriber after %.1f s on %s: playing anyway", timeout_s, ", ".join(lonely))


class _BagClock:
    """Publishes bag time on ``/clock``: a tick at most every ``1 / hz`` seconds of wall time, never a repeat."""

    def __init__(self, node: Node, hz: float) -> None:
        self.publisher = node.create_publisher(Clock, CLOCK_TOPIC, 10)
        self.period_s = 1.0 / hz
        self._next_tick = 0.0
        self._last_ns: int | None = None

    def publish(self, bag_ns: int) -> None:
        if bag_ns != self._last_ns:
            self.publisher.publish(Clock(clock=Time(sec=bag_ns // NANOSECONDS, nanosec=bag_ns % NANOSECONDS)))
            self._last_ns = bag_ns

    def tick(self, wall_now: float, bag_ns: int) -> None:
        if wall_now >= self._next_tick:
            self.publish(bag_ns)
            self._next_tick = wall_now + self.period_s


def _play_once(node: Node, reader: Reader, publishers: dict[str, Publisher], rate: float, clock: _BagClock | None,
               stop: threading.Event | None) -> int:
    """One pass over the bag at its recorded pace; returns the number of messages published."""
    published = 0
    first_ns: int | None = None
    wall_start = time.monotonic()
    for connection, timestamp, raw in reader.messages():
        first_ns = timestamp if first_ns is None else first_ns
        due = wall_start + (timestamp - first_ns) / NANOSECONDS / rate
        while _running(node, stop) and (now := time.monotonic()) < due:
            if clock is not None:
                clock.tick(now, first_ns + int((now - wall_start) * rate * NANOSECONDS))
            # Short naps keep /clock ticking and let a shutdown (SIGINT/SIGTERM) end the wait promptly.
            time.sleep(min(due - now, clock.period_s if clock is not None else 0.05, 0.05))
        if not _running(node, stop):
            break
        if clock is not None:
            clock.publish(timestamp)
        publishers[connection.topic].publish(bytes(raw))
        published += 1
    return published


def play_bag(
    node: Node,
    path: str | Path,
    *,
    rate: float = 1.0,
    clock_hz: float | None = None,
    remap: dict[str, str] | None = None,
    loop: bool = False,
    wait_subscribers_s: float = 5.0,
    stop: threading.Event | None = None,
) -> int:
    """Publish the bag's recorded bytes on ``node`` at their recorded pace (times ``rate``); returns the count.

    With ``clock_hz``, ``/clock`` carries bag time: ticks at ``clock_hz`` between messages, and each message's bag
    timestamp exactly, just before the message, so a ``use_sim_time`` node sees now() == the message's stamp.
    Stops early when ``stop`` is set or the node's context shuts down.
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    remap = remap or {}
    with Reader(path) as reader:
        publishers = {}
        for connection in reader.connections:
            if connection.topic not in publishers:
                offered = list(connection.ext.offered_qos_profiles)
                publishers[connection.topic] = node.create_publisher(
                    message_class(connection.msgtype), remap.get(connection.topic, connection.topic),
                    _replay_qos(offered))
        clock = _BagClock(node, clock_hz) if clock_hz else None
        _wait_for_subscribers(
            node, [*publishers.values(), *([clock.publisher] if clock else [])], wait_subscribers_s, stop)
        published = _play_once(node, reader, publishers, rate, clock, stop)
        while loop and _running(node, stop):
            published += _play_once(node, reader, publishers, rate, clock, stop)
        # A reliable large frame can still be in flight when the last publish returns; exiting then loses it.
        for publisher in publishers.values():
            if not publisher.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S)):
                LOG.warning("%s: not every subscriber acknowledged the last messages within %.0f s",
                            publisher.topic_name, ACK_TIMEOUT_S)
    LOG.info("published %d messages from %s", published, path)
    return published


# --- recording --------------------------------------------------------------------------------------------------


def _record_qos(node: Node, topic: str) -> tuple[QoSProfile, list[Qos]]:
    """Subscription QoS matching every current publisher of ``topic`` (reliable / transient local only when all
    publishers offer it, as rosbag2 does), and their offered profiles for the bag's metadata."""
    infos = node.get_publishers_info_by_topic(topic)
    reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
    transient = all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
    profile = QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=100,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if transient else DurabilityPolicy.VOLATILE,
    )
    offered = [
        _DEFAULT_OFFERED_QOS._replace(
            depth=i.qos_profile.depth,
            reliability=QosReliability.RELIABLE if i.qos_profile.reliability == ReliabilityPolicy.RELIABLE
            else QosReliability.BEST_EFFORT,
            durability=QosDurability.TRANSIENT_LOCAL if i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
            else QosDurability.VOLATILE,
        )
        for i in infos
    ]
    return profile, offered


class BagRecorder:
    """Records ``topics`` into a new bag at ``path``. Call :meth:`subscribe_new` periodically (topics are joined as
    their publishers appear, with the type the graph reports), spin the node, then :meth:`close`.

    Bag timestamps are the node's clock at reception (sim time when the node uses it).
    """

    def __init__(self, node: Node, path: str | Path, topics: Sequence[str], storage: str = "sqlite3") -> None:
        self.node = node
        self.topics = list(dict.fromkeys(node.resolve_topic_name(t) for t in topics))
        self.counts: dict[str, int] = {}
        self.last_message_at: float | None = None
        self._subscriptions: dict[str, Subscription] = {}
        self._writer = Writer(path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
        self._writer.open()

    def subscribe_new(self) -> None:
        """Subscribe to every requested topic that has a publisher now and no subscription yet."""
        if len(self._subscriptions) == len(self.topics):
            return
        types = dict(self.node.get_topic_names_and_types())
        for topic in self.topics:
            if topic in self._subscriptions or topic not in types or not self.node.count_publishers(topic):
                continue
            msgtype = types[topic][0]
            ensure_types(typestore(), [msgtype])
            qos, offered = _record_qos(self.node, topic)
            connection = self._writer.add_connection(
                topic, msgtype, typestore=typestore(), offered_qos_profiles=offered)
            self.counts[topic] = 0
            self._subscriptions[topic] = self.node.create_subscription(
                message_class(msgtype), topic, lambda raw, t=topic, c=connection: self._write(t, c, raw), qos,
                raw=True)
            LOG.info("recording %s (%s)", topic, msgtype)

    def _write(self, topic: str, connection: Connection, raw: bytes) -> None:
        self._writer.write(connection, self.node.get_clock().now().nanoseconds, raw)
        self.counts[topic] += 1
        self.last_message_at = time.monotonic()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def close(self) -> None:
        for subscription in self._subscriptions.values():
            self.node.destroy_subscription(subscription)
        self._subscriptions.clear()
        self._writer.close()


def record_bag(
    node: Node,
    path: str | Path,
    topics: Sequence[str],
    *,
    duration_s: float | None = None,
    until_idle_s: float | None = None,
    storage: str = "sqlite3",
    stop: threading.Event | None = None,
) -> dict[str, int]:
    """Record ``topics`` until ``duration_s`` passes, nothing arrived for ``until_idle_s`` (counted from the start
    while nothing has arrived yet), ``stop`` is set or the context shuts down; returns messages written per topic.

    On ``stop`` (how the command line handles SIGINT/SIGTERM) messages already received are written before the bag
    is closed.
    """
    recorder = BagRecorder(node, path, topics, storage=storage)
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    start = time.monotonic()
    try:
        while _running(node, stop):
            recorder.subscribe_new()
            executor.spin_once(timeout_sec=0.05)
            now = time.monotonic()
            if duration_s is not None and now - start >= duration_s:
                break
            if until_idle_s is not None and now - (recorder.last_message_at or start) >= until_idle_s:
                break
        # Drain: take whatever the subscriptions still hold until a short spin brings nothing new.
        written = -1
        while rclpy.ok(context=node.context) and written != recorder.total:
            written = recorder.total
            executor.spin_once(timeout_sec=0.1)
    finally:
        executor.remove_node(node)
        recorder.close()
    LOG.info("recorded %s into %s", recorder.counts, path)
    return recorder.counts


# --- command line -----------------------------------------------------------------------------------------------


def _remap_rule(value: str) -> tuple[str, str]:
    old, sep, new = value.partition(":=")
    if not sep or not old or not new:
        raise argparse.ArgumentTypeError(f"expected OLD:=NEW, got '{value}'")
    return old, new


def _split_ros_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(own arguments, the ``--ros-args ... [--]`` block). Done by hand because rcl would also take the
    ``OLD:=NEW`` of ``--remap`` for a (deprecated) remapping rule of this process."""
    if "--ros-args" not in argv:
        return argv, []
    start = argv.index("--ros-args")
    end = argv.index("--", start) + 1 if "--" in argv[start:] else len(argv)
    return argv[:start] + argv[end:], argv[start:end]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hybridnets_ros.ros.bag", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    play = commands.add_parser("play", help="publish a bag's messages at their recorded pace")
    play.add_argument("bag", type=Path)
    play.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    play.add_argument("--clock", type=float, nargs="?", const=DEFAULT_CLOCK_HZ, default=None, metavar="HZ",
                      help=f"publish /clock from the bag's timestamps (default {DEFAULT_CLOCK_HZ:g} Hz when given)")
    play.add_argument("--remap", type=_remap_rule, nargs="+", action="extend", default=[], metavar="OLD:=NEW",
                      help="publish topic OLD as NEW")
    play.add_argument("--loop", action="store_true", help="start over at the end until interrupted")
    play.add_argument("--wait-subscribers", type=float, default=5.0, metavar="S",
                      help="wait up to S seconds for every topic to have a subscriber first (default 5)")
    record = commands.add_parser("record", help="record topics into a new bag")
    record.add_argument("bag", type=Path, help="output bag directory (must not exist)")
    record.add_argument("--topics", nargs="+", required=True)
    stop = record.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    stop.add_argument("--until-idle", type=float, metavar="S", help="stop after S seconds without a message")
    record.add_argument("--use-sim-time", action="store_true", help="timestamp with /clock instead of system time")
    record.add_argument("--storage", choices=sorted(STORAGES), default="sqlite3")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    own, ros_args = _split_ros_args(list(sys.argv[1:] if argv is None else argv))
    args = _parser().parse_args(own)
    configure_logging()
    # DDS stays on this host unless the caller decided otherwise (project rule for every ROS process).
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    # SIGINT/SIGTERM end the work through `stop` instead of tearing rclpy down, so a recorder can still write
    # what it received and close its bag.
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    rclpy.init(args=[sys.argv[0], *ros_args], signal_handler_options=SignalHandlerOptions.NO)
    try:
        if args.command == "play":
            node = rclpy.create_node("hybridnets_bag_player")
            play_bag(node, args.bag, rate=args.rate, clock_hz=args.clock, remap=dict(args.remap), loop=args.loop,
                     wait_subscribers_s=args.wait_subscribers, stop=stop)
        else:
            node = rclpy.create_node("hybridnets_bag_recorder", parameter_overrides=[
                Parameter("use_sim_time", value=args.use_sim_time)])
            record_bag(node, args.bag, args.topics, duration_s=args.duration, until_idle_s=args.until_idle,
                       storage=args.storage, stop=stop)
    finally:
        rclpy.try_shutdown()
    if stop.is_set():
        LOG.info("stopped by a signal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
