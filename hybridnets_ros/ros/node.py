"""The ``hybridnets`` lifecycle node: camera images in, detections and lane/drivable-area masks out.

Thin by design: the network and its pre/post-processing are ``HybridNetsPipeline``; this module only moves messages.

Threads: the executor (main thread) runs subscriptions, parameter and lifecycle services and the diagnostics timer.
Subscription callbacks only convert (zero-copy for raw images) and drop the frame into its camera's slot of a
:class:`FrameBuffer`. One inference thread takes batches from the slots (the newest frame of every camera that has
one, waiting at most ``max_batch_wait_ms`` for the others), runs one forward pass for the batch and publishes every
output with the input's header. A slow model therefore drops frames (counted) instead of queueing them.
"""
from __future__ import annotations

import dataclasses
import logging
import re
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleState, Node as LifecycleNode, TransitionCallbackReturn
from rclpy.exceptions import InvalidTopicNameException
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions
from rclpy.validate_full_topic_name import validate_full_topic_name
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from hybridnets_ros.cli_support import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, configure_logging
from hybridnets_ros.conventions import DetectionThresholds
from hybridnets_ros.resources import WeightsFileError, resolve_weights
from hybridnets_ros.ros import conversions, diagnostics, ground
from hybridnets_ros.ros.frame_buffer import Frame, FrameBuffer

_log = logging.getLogger(__name__)

NODE_NAME = "hybridnets"
DIAGNOSTICS_PERIOD_S = 1.0
SPIN_PERIOD_S = 0.2  # the longest a SIGINT or SIGTERM waits for the executor to come back to Python
BAD_INPUT_WARNING_PERIOD_S = 5.0

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
CAMERA_NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*")
# Segmentation class names (model config seg_list) that feed the two 0/255 mask topics.
DRIVABLE_NAMES = ("road", "drivable", "drivable_area", "drivable_areas")
LANE_NAMES = ("lane", "lanes", "lane_line", "lane_lines")

OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
OVERLAY_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
LABEL_INFO_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
DIAGNOSTICS_QOS = QoSProfile(depth=10)
INPUT_QOS = {
    "sensor_data": qos_profile_sensor_data,
    "reliable": QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE),
}


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: default (also its type), description, allowed values or range, when it takes effect."""

    name: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    value_range: tuple[float, float] | None = None
    live: bool = False  # applied at once; otherwise read at the next configure


PARAMETERS = (
    ParamSpec("weights", "", "HybridNets checkpoint (.pt); empty = the bundled model"),
    ParamSpec("model_config", "", "architecture: a models/ config name or yaml path; empty = the one stored in the "
              "checkpoint (a bare state dict, like the official hybridnets.pth, means hybridnets_d3_bdd100k)"),
    ParamSpec("device", "auto", "auto (cuda if available, else cpu), cpu, cuda or cuda:N"),
    ParamSpec("precision", "auto", "auto (fp16 on a GPU, else fp32), fp32, fp16 (GPU only) or int8 (backends "
              "openvino, tensorrt or auto; quantised once on the calibration frames, then cached)",
              choices=("auto", "fp32", "fp16", "int8")),
    ParamSpec("backend", "auto", "inference backend; auto = TensorRT (else torch) on a GPU, OpenVINO (else ONNX "
              "Runtime, else torch) on the CPU; the choice and its reason are logged and in /diagnostics",
              choices=("auto", "torch", "onnxruntime", "openvino", "tensorrt")),
    ParamSpec("calibration", "synthetic", "frames int8 is calibrated on (precision int8 only): synthetic (generated "
              "scenes), or a folder of images, a video file or a rosbag2 bag"),
    ParamSpec("score_threshold", DetectionThresholds.score_threshold, "detections with a lower score are dropped",
              value_range=(0.0, 1.0), live=True),
    ParamSpec("nms_iou_threshold", DetectionThresholds.nms_iou_threshold, "boxes overlapping a better one of their "
              "class by more IoU are suppressed", value_range=(0.0, 1.0), live=True),
    ParamSpec("max_detections", DetectionThresholds.max_detections, "most detections published per image",
              value_range=(1, 10000), live=True),
    ParamSpec("pre_nms_top_k", DetectionThresholds.pre_nms_top_k, "best-scoring candidates kept before NMS",
              value_range=(1, 1000000), live=True),
    ParamSpec("cameras", ["camera"], "camera names; camera C is read from C/image_raw and answered on C/..."),
    ParamSpec("transport", "raw", "raw (C/image_raw, sensor_msgs/Image) or compressed (C/image_raw/compressed, "
              "sensor_msgs/CompressedImage); C.transport overrides it per camera", choices=("raw", "compressed")),
    ParamSpec("input_qos", "sensor_data", "subscription QoS of the images: sensor_data (best effort, matches every "
              "publisher) or reliable", choices=tuple(INPUT_QOS)),
    ParamSpec("max_batch_wait_ms", 10, "how long a batch waits for the other cameras' frames",
              value_range=(0, 10000), live=True),
    ParamSpec("max_input_age_ms", 0, "frames whose stamp is older than this (node clock) are dropped; 0 = no limit",
              value_range=(0, 3600000), live=True),
    ParamSpec("max_input_pixels", 50_000_000, "images larger than this (width x height; for compressed images the "
              "size their header declares, checked before decoding) are refused as invalid",
              value_range=(1, 1_000_000_000), live=True),
    ParamSpec("publish_overlay", True, "offer C/overlay (drawn only while someone subscribes)"),
    ParamSpec("ground_frame", "base_footprint", "frame of the ground-plane outputs; its z = 0 plane is the road"),
    ParamSpec("ground.resolution", 0.1, "cell size (m) of C/drivable_area/grid", value_range=(0.01, 10.0)),
    ParamSpec("ground.x_range", [0.0, 50.0], "[min, max] x (m, forward) of the grid and lane lines in ground_frame"),
    ParamSpec("ground.y_range", [-15.0, 15.0], "[min, max] y (m, left) of the grid and lane lines in ground_frame"),
    ParamSpec("ground.max_range", 50.0, "pixels whose ray meets the ground farther (m) from the camera are not "
              "projected", value_range=(1.0, 1000.0)),
    ParamSpec("overlap_stages", False, "run preprocessing of the next batch, the forward pass and post-processing + "
              "publishing of the previous batch in three threads at once (more frames/s where the stages do not "
              "compete for the same cores, e.g. a GPU) instead of one after the other"),
    ParamSpec("autostart", True, "configure and activate on start-up; a failing configure then exits with code 1"),
)
PARAMETER_DEFAULTS = {p.name: p.default for p in PARAMETERS}
THRESHOLD_PARAMETERS = ("score_threshold", "nms_iou_threshold", "max_detections", "pre_nms_top_k")
CAMERA_TRANSPORT_CHOICES = ("", "raw", "compressed")
LONGEST_CAMERA_TOPIC = "image_raw/compressed"  # of the topics under a camera's name, the one with the longest suffix


def camera_transport_parameter(camera: str) -> str:
    """Name of the per-camera transport override (``front/left`` -> ``front.left.transport``)."""
    return f"{camera.replace('/', '.')}.transport"


def stamp_ns(header: Header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def seg_class_id(seg_names: Sequence[str], aliases: Sequence[str]) -> int | None:
    """Mask value (1-based position in seg_list) of the first class named like ``aliases``; None if absent."""
    for k, name in enumerate(seg_names):
        if name.lower() in aliases:
            return k + 1
    return None


def _descriptor(spec: ParamSpec) -> ParameterDescriptor:
    notes = [spec.description]
    if spec.choices:
        notes.append(f"one of: {', '.join(spec.choices)}")
    notes.append("changes apply at once" if spec.live else "read at configure")
    descriptor = ParameterDescriptor(name=spec.name, description="; ".join(notes))
    if spec.value_range is not None:
        low, high = spec.value_range
        if isinstance(spec.default, float):
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high))]
        else:
            descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
    return descriptor


def validate_parameter(name: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name`` (None when it is).

    Ranges are checked here exactly, because rclpy's own range check lets floats through up to 1e-6 beyond the
    bounds (a score_threshold of 1.0000005 would then fail every batch in the pipeline).
    """
    spec = next((p for p in PARAMETERS if p.name == name), None)
    if spec is not None and spec.choices and value not in spec.choices:
        return f"{name} must be one of {', '.join(spec.choices)}, got '{value}'"
    if spec is not None and spec.value_range is not None and isinstance(value, (int, float)):
        low, high = spec.value_range
        if not low <= value <= high:
            return f"{name} must be in [{low}, {high}], got {value}"
    if name == "device" and not DEVICE_PATTERN.fullmatch(value):
        return f"device must be auto, cpu, cuda or cuda:N, got '{value}'"
    if name == "cameras":
        if not value:
            return "cameras must name at least one camera"
        bad = [c for c in value if not CAMERA_NAME_PATTERN.fullmatch(c)]
        if bad:
            return f"camera names must be relative topic names (letters, digits, _, /), got {bad}"
        if len(set(value)) != len(value):
            return f"camera names must be unique, got {list(value)}"
    if name.endswith(".transport") and value not in CAMERA_TRANSPORT_CHOICES:
        return f"{name} must be raw, compressed or empty (= the transport parameter), got '{value}'"
    return ground.validate_parameter(name, value)


class ConfigureError(RuntimeError):
    """A configure failure whose message already says what is wrong and what to do."""


@dataclass
class CameraOutputs:
    """Publishers of one camera (``drivable``/``lane`` None when the model has no such class)."""

    detections: Any
    segmentation: Any
    drivable: Any | None
    lane: Any | None
    overlay: Any | None


class HybridNetsNode(LifecycleNode):
    """Lifecycle node: configure loads the model, activate subscribes and starts the inference thread."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._pipeline: Any = None
        self._model_info: diagnostics.ModelInfo | None = None
        self._cameras: list[tuple[str, str]] = []  # (name, transport) fixed at configure
        self._input_qos = INPUT_QOS["sensor_data"]
        self._outputs: dict[str, CameraOutputs] = {}
        self._label_info_pub: Any = None
        self._lifecycle_publishers: list[Any] = []  # every one _create_publishers made, for _destroy_publishers
        self._diagnostics_pub: Any = None
        self._drivable_id: int | None = None
        self._lane_id: int | None = None
        self._subscriptions_active: list[Any] = []
        self._buffer: FrameBuffer | None = None
        self._worker: Any = None  # the StageRunner of the inference stages while active
        self._diagnostics_timer: Any = None
        self._camera_stats: dict[str, diagnostics.CameraStats] = {}
        self._model_stats = diagnostics.ModelStats()
        self._camera_info: dict[str, CameraInfo] = {}
        self._ground: ground.GroundOutputs | None = None
        self._warnings = diagnostics.WarningLimiter(BAD_INPUT_WARNING_PERIOD_S)

        self.add_on_set_parameters_callback(self._validate_parameters)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, _descriptor(spec))
        self._declare_camera_parameters(self.get_parameter("cameras").value)
        self._live = {p.name: self.get_parameter(p.name).value for p in PARAMETERS if p.live}
        self.add_post_set_parameters_callback(self._apply_parameters)

    # ---- parameters -------------------------------------------------------------------------------------------

    def _declare_camera_parameters(self, cameras: Sequence[str]) -> None:
        for camera in cameras:
            name = camera_transport_parameter(camera)
            if not self.has_parameter(name):
                description = f"transport of camera {camera}: raw, compressed, or empty = the transport parameter"
                self.declare_parameter(name, "", ParameterDescriptor(name=name, description=description))
            name = ground.camera_pose_parameter(camera)
            if not self.has_parameter(name):
                description = (f"pose [x, y, z, roll, pitch, yaw] (m, rad) of camera {camera}'s body frame (REP 103) "
                               "in ground_frame, used when TF has no transform for its images; [] = none")
                # Dynamically typed: [] declares no array type, and integer lists are as good as floats here.
                self.declare_parameter(name, [], ParameterDescriptor(name=name, description=description,
                                                                     dynamic_typing=True))

    def _validate_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for param in params:
            reason = validate_parameter(param.name, param.value)
            if reason is None and param.name == "cameras":
                reason = self._camera_topics_problem(param.value)
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _camera_topics_problem(self, cameras: Sequence[str]) -> str | None:
        """Why a camera's topics could not be created in this node's namespace (too long), or None."""
        for camera in cameras:
            try:
                validate_full_topic_name(self.resolve_topic_name(f"{camera}/{LONGEST_CAMERA_TOPIC}"))
            except (InvalidTopicNameException, RuntimeError) as exc:  # RuntimeError: rcl's RCLError from resolving
                shown = camera if len(camera) <= 40 else f"{camera[:37]}... ({len(camera)} characters)"
                reason = re.sub(r",? at \S+:\d+", "", str(exc).splitlines()[0])  # rcl appends its source location
                return f"camera '{shown}' gives an invalid topic name: {reason}"
        return None

    def _apply_parameters(self, params: list[Parameter]) -> None:
        changed = {p.name: p.value for p in params if p.name in self._live}
        self._live.update(changed)
        if self._pipeline is not None and changed.keys() & set(THRESHOLD_PARAMETERS):
            self._pipeline.postprocess = self._postprocess_config()
            self.get_logger().info(
                "thresholds now " + ", ".join(f"{k}={self._live[k]}" for k in THRESHOLD_PARAMETERS)
            )
            if "score_threshold" in changed and self._subscriptions_active:
                self._publish_label_info()

    def _postprocess_config(self) -> Any:
        thresholds = {k: self._live[k] for k in THRESHOLD_PARAMETERS}
        return dataclasses.replace(self._pipeline.postprocess, **thresholds)

    # ---- lifecycle --------------------------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as exc:  # every failure becomes one clear log line and a FAILURE, never a traceback
            # Whatever was made so far goes, so the node is as unconfigured as before and a later configure starts
            # clean (one publisher per topic, no model held).
            self._destroy_publishers()
            self._release_model()
            if not self.context.ok():  # shut down while configuring: not a fault (and rosout is gone)
                _log.info("configure interrupted by shutdown")
            else:
                self.get_logger().error(f"configure failed: {_describe(exc)}; released what it had set up")
                _log.debug("configure failure", exc_info=True)
            return TransitionCallbackReturn.FAILURE
        return super().on_configure(state)

    def _configure(self) -> None:
        """Load the model and create the publishers; raises on any failure (the caller releases what was made)."""
        self._pipeline = self._load_pipeline()
        cameras = list(self.get_parameter("cameras").value)
        self._declare_camera_parameters(cameras)
        default_transport = self.get_parameter("transport").value
        self._cameras = [
            (c, self.get_parameter(camera_transport_parameter(c)).value or default_transport) for c in cameras
        ]
        self._input_qos = INPUT_QOS[self.get_parameter("input_qos").value]
        self._create_publishers(publish_overlay=self.get_parameter("publish_overlay").value)
        self.get_logger().info(
            f"configured: model {self._model_info.model} ({self._model_info.weights}) on "
            f"{self._model_info.device}/{self._model_info.precision}/{self._model_info.backend}; cameras "
            + ", ".join(f"{c} ({t})" for c, t in self._cameras)
        )

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # enables the lifecycle publishers
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        self._camera_stats = {c: diagnostics.CameraStats() for c, _ in self._cameras}
        self._model_stats = diagnostics.ModelStats()
        self._buffer = FrameBuffer([c for c, _ in self._cameras])
        self._subscriptions_active = self._create_subscriptions()
        self._worker = self._inference_runner(self._buffer)
        self._worker.start()
        steady = Clock(clock_type=ClockType.STEADY_TIME)  # diagnostics keep their pace while sim time is paused
        self._diagnostics_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics, clock=steady)
        self._publish_label_info()
        topics = ", ".join(s.topic_name for s in self._subscriptions_active)
        self.get_logger().info(f"active: listening on {topics}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_work()
        self.get_logger().info("inactive: subscriptions closed, inference stopped")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_publishers()
        self._release_model()
        self.get_logger().info("unconfigured: model released")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop()
        return super().on_shutdown(state)

    def stop(self) -> None:
        """Stop the inference thread and free everything (safe in any state, also at process exit)."""
        self._stop_work()
        self._destroy_publishers()
        self._release_model()

    def autostart(self) -> bool:
        """Walk to active; False when a transition failed (its reason is already logged)."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    # ---- set-up and tear-down ---------------------------------------------------------------------------------

    def _load_pipeline(self) -> Any:
        # Imported here: torch takes seconds to import, and nothing before configure needs it.
        from hybridnets_ros.inference.pipeline import HybridNetsPipeline

        weights = self.get_parameter("weights").value or None
        try:
            path = resolve_weights(weights, "the parameter 'weights'")
        except WeightsFileError as exc:
            raise ConfigureError(str(exc)) from exc
        params = {name: self.get_parameter(name).value
                  for name in ("model_config", "device", "precision", "backend", "calibration")}
        # The calibration source only matters to (and is only accepted by) the quantising backends.
        int8_options = {"calibration": params["calibration"]} if params["precision"] == "int8" else {}
        started = time.monotonic()
        pipeline = HybridNetsPipeline.from_weights(
            weights=path,
            model_config=params["model_config"] or None,
            device=params["device"],
            precision=params["precision"],
            backend=params["backend"],
            postprocess=DetectionThresholds(**{k: self._live[k] for k in THRESHOLD_PARAMETERS}),
            **int8_options,
        )
        loaded = time.monotonic()
        self._warm_up(pipeline, len(self.get_parameter("cameras").value))
        self._model_info = diagnostics.ModelInfo(
            model=pipeline.config.name,
            weights=weights or "bundled",
            backend=pipeline.backend.name,
            device=str(pipeline.device),
            precision=pipeline.precision,
            backend_selection=pipeline.backend.selection,
        )
        self._drivable_id = seg_class_id(pipeline.seg_names, DRIVABLE_NAMES)
        self._lane_id = seg_class_id(pipeline.seg_names, LANE_NAMES)
        for topic, class_id in (("drivable_area/mask", self._drivable_id), ("lane_lines/mask", self._lane_id)):
            if class_id is None:
                self.get_logger().warning(f"the model's seg_list {list(pipeline.seg_names)} has no class for {topic}: "
                                          "that topic is not offered")
        self.get_logger().info(
            f"model loaded in {loaded - started:.1f} s, warmed up in {time.monotonic() - loaded:.1f} s"
        )
        return pipeline

    @staticmethod
    def _warm_up(pipeline: Any, batch_size: int) -> None:
        """One forward pass at the network input size, so the first real frame does not pay for lazy set-up."""
        height, width = pipeline.config.input_size
        pipeline([np.zeros((height, width, 3), np.uint8)] * batch_size, "bgr8")

    def _create_publishers(self, publish_overlay: bool) -> None:
        def pub(msg_type: type, topic: str, qos: QoSProfile) -> Any:
            publisher = self.create_lifecycle_publisher(msg_type, topic, qos)
            self._lifecycle_publishers.append(publisher)  # recorded at once: a failure half-way leaves no orphan
            return publisher

        for camera, _ in self._cameras:
            self._outputs[camera] = CameraOutputs(
                detections=pub(Detection2DArray, f"{camera}/detections", OUTPUT_QOS),
                segmentation=pub(Image, f"{camera}/segmentation", OUTPUT_QOS),
                drivable=pub(Image, f"{camera}/drivable_area/mask", OUTPUT_QOS) if self._drivable_id else None,
                lane=pub(Image, f"{camera}/lane_lines/mask", OUTPUT_QOS) if self._lane_id else None,
                overlay=pub(Image, f"{camera}/overlay", OVERLAY_QOS) if publish_overlay else None,
            )
        self._label_info_pub = pub(LabelInfo, "label_info", LABEL_INFO_QOS)
        self._ground = ground.GroundOutputs.from_node(self, pub, [c for c, _ in self._cameras], self._camera_info,
                                                      self._pipeline.class_names, self._drivable_id, self._lane_id,
                                                      self._warnings)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)

    def _destroy_publishers(self) -> None:
        if self._ground is not None:
            self._ground.close()
            self._ground = None
        for publisher in self._lifecycle_publishers:
            self.destroy_lifecycle_publisher(publisher)
        self._lifecycle_publishers = []
        self._outputs = {}
        self._label_info_pub = None
        if self._diagnostics_pub is not None:
            self.destroy_publisher(self._diagnostics_pub)
            self._diagnostics_pub = None

    def _release_model(self) -> None:
        device = getattr(self._pipeline, "device", None)
        self._pipeline = None
        if device is not None and getattr(device, "type", "") == "cuda":
            import torch

            torch.cuda.empty_cache()

    def _create_subscriptions(self) -> list[Any]:
        subscriptions = []
        for camera, transport in self._cameras:
            if transport == "compressed":
                subscriptions.append(self.create_subscription(
                    CompressedImage, f"{camera}/image_raw/compressed",
                    lambda msg, c=camera: self._on_compressed(c, msg), self._input_qos))
            else:
                subscriptions.append(self.create_subscription(
                    Image, f"{camera}/image_raw", lambda msg, c=camera: self._on_image(c, msg), self._input_qos))
            subscriptions.append(self.create_subscription(
                CameraInfo, f"{camera}/camera_info", lambda msg, c=camera: self._on_camera_info(c, msg),
                qos_profile_sensor_data))
        return subscriptions

    def _stop_work(self) -> None:
        for subscription in self._subscriptions_active:
            self.destroy_subscription(subscription)
        self._subscriptions_active = []
        if self._buffer is not None:
            self._buffer.close()
        if self._worker is not None:
            self._worker.join()
            self._worker = None
        self._buffer = None
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None

    # ---- input ------------------------------------------------------------------------------------------------

    def _on_image(self, camera: str, msg: Image) -> None:
        self._accept(camera, msg.header, lambda: conversions.check_image(msg, self._live["max_input_pixels"]),
                     lambda: (conversions.image_to_array(msg), conversions.decoded_encoding(msg.encoding)))

    def _on_compressed(self, camera: str, msg: CompressedImage) -> None:
        self._accept(camera, msg.header, lambda: conversions.check_compressed(msg, self._live["max_input_pixels"]),
                     lambda: (conversions.compressed_to_array(msg), "bgr8"))

    def _on_camera_info(self, camera: str, msg: CameraInfo) -> None:
        """Kept for the ground outputs (the image's intrinsics) and the diagnostics (image size it describes)."""
        self._camera_info[camera] = msg

    def _accept(self, camera: str, header: Header, check: Callable[[], None],
                decode: Callable[[], tuple[np.ndarray, str]]) -> None:
        """Executor thread: count the frame, run the cheap ``check`` (header and size only) and hand the frame
        to the inference side, which runs ``decode`` (see ``_decode_frames``)."""
        stats = self._camera_stats[camera]
        stats.count("received")
        if stats.add_stamp(stamp_ns(header)):
            self._warn_transport_loss(camera)
        try:
            check()
        except conversions.ImageConversionError as exc:
            self._skip_invalid(camera, exc)
            return
        replaced = self._buffer.put(Frame(camera, None, "", header, stamp_ns(header), decode=decode))
        if replaced is not None:
            stats.count("dropped_replaced")

    def _skip_invalid(self, camera: str, exc: conversions.ImageConversionError) -> None:
        """Count an invalid frame and warn (at most once per camera, kind and BAD_INPUT_WARNING_PERIOD_S)."""
        self._camera_stats[camera].count("invalid")
        held_back = self._warnings.allow(f"{camera}/{exc.kind}")
        if held_back is not None:
            more = f" ({held_back} more since the last warning)" if held_back else ""
            self.get_logger().warning(f"camera '{camera}': skipped an invalid image: {exc}{more}")

    def _warn_transport_loss(self, camera: str) -> None:
        report = self._camera_stats[camera].stamp_report()
        self.get_logger().warning(
            f"camera '{camera}': the input stamps imply that {report['missed_by_stamps']} of "
            f"{report['missed_by_stamps'] + report['received_stamped']} frames never reached the node (lost in the "
            "transport, below the node; counted in /diagnostics as missed_by_stamps). For large images use the "
            "shared-memory Fast DDS profile (launch files: shm_transport:=true; by hand: FASTDDS_DEFAULT_PROFILES_FILE="
            "<share>/config/fastdds_shm.xml in every process of the pipeline) or input_qos:=reliable with a reliable "
            "publisher. Warned once per camera.")

    def _decode_frames(self, frames: list[Frame]) -> list[Frame]:
        """Decode and convert the pixels of ``frames`` (lazily decoded by the subscription callbacks); the ones
        that fail are counted invalid and warned about (naming the camera, rate-limited) and left out.

        Runs on the inference side, never on the executor thread, so a slow decode holds up no callback or
        service. Whoever runs the pipeline calls this first on every batch (the first inference stage,
        ``_prepare_stage``): it returns the frames with ``image`` set, in order.
        """
        good = []
        for frame in frames:
            try:
                good.append(frame.decoded())
            except conversions.ImageConversionError as exc:
                self._skip_invalid(frame.camera, exc)
            except Exception as exc:  # any other decoder failure is bad input too, never the end of the thread
                self._skip_invalid(frame.camera, conversions.ImageConversionError("decode", _describe(exc)))
        return good

    # ---- inference thread -------------------------------------------------------------------------------------

    def _inference_runner(self, buffer: FrameBuffer) -> Any:
        """The inference stages (decode + preprocess, forward, post-process + publish), overlapped in three threads
        or in one thread batch after batch (``overlap_stages``); batches are taken from ``buffer`` only when the
        first stage can start on them, so the frame buffer keeps the newest frames until then."""
        from hybridnets_ros.inference.stages import StageRunner  # torch is loaded with the pipeline by now

        overlapped = self.get_parameter("overlap_stages").value
        self.get_logger().info("inference stages " + ("overlapped (decode + preprocess | forward | post-process + "
                                                      "publish, one thread each)" if overlapped else "serial"))
        stages = [self._prepare_stage, self._forward_stage, lambda item: self._publish_stage(item, buffer)]
        return StageRunner(lambda: self._next_frames(buffer), stages, lambda: buffer.closed, overlapped=overlapped,
                           name="hybridnets-inference")

    def _next_frames(self, buffer: FrameBuffer) -> list[Frame] | None:
        """The next batch's frames (waiting for them), or None; stale frames are counted and warned about."""
        batch = buffer.next_batch(
            max_wait_s=self._live["max_batch_wait_ms"] / 1000.0,
            max_age_ns=lambda: self._live["max_input_age_ms"] * 1_000_000,  # read as frames are taken
            now_ns=lambda: self.get_clock().now().nanoseconds,
        )
        for frame in batch.stale:
            self._camera_stats[frame.camera].count("dropped_stale")
            self._warn_stale(frame, batch.max_age_ns)
        return batch.frames or None

    def _warn_stale(self, frame: Frame, max_age_ns: int) -> None:
        held_back = self._warnings.allow(f"{frame.camera}/stale")
        if held_back is None:
            return
        age_ms = (self.get_clock().now().nanoseconds - frame.stamp_ns) / 1e6
        more = f" ({held_back} more since the last warning)" if held_back else ""
        self.get_logger().warning(
            f"camera '{frame.camera}': dropped a frame {age_ms:.0f} ms old (max_input_age_ms "
            f"{max_age_ns // 1_000_000}){more}; check the camera's clock, or for a bag play it with --clock "
            f"and set use_sim_time")

    def _prepare_stage(self, frames: list[Frame]) -> tuple[list[Frame], Any] | None:
        """Stage 1: decode the frames and preprocess them into a network input (None: nothing left to run)."""
        frames = self._decode_frames(frames)
        if not frames:
            return None
        try:
            return frames, self._pipeline.prepare([f.image for f in frames], [f.encoding for f in frames])
        except Exception as exc:  # a bad batch must not end the thread: report it and carry on with the next
            self._fail_batch(frames, exc)
            return None

    def _forward_stage(self, item: tuple[list[Frame], Any]) -> tuple[list[Frame], Any] | None:
        """Stage 2: the forward pass."""
        frames, staged = item
        try:
            return frames, self._pipeline.infer(staged)
        except Exception as exc:
            self._fail_batch(frames, exc)
            return None

    def _publish_stage(self, item: tuple[list[Frame], Any], buffer: FrameBuffer) -> None:
        """Stage 3: post-process and publish every output of every frame, with the input's header."""
        frames, staged = item
        try:
            results = self._pipeline.finish(staged)
        except Exception as exc:
            self._fail_batch(frames, exc)
            return
        timings = staged.timings
        self._model_stats.add_batch(len(frames), timings)
        pipeline_ms = sum(timings.values())
        for frame, result in zip(frames, results):
            try:
                self._publish_outputs(frame, result)
            except Exception as exc:
                if buffer.closed or not self.context.ok():  # shutting down: the context may already be gone
                    return
                self._camera_stats[frame.camera].count("failed")
                if self._warnings.allow("publish") is not None:
                    self.get_logger().error(f"publishing for camera '{frame.camera}' failed: {_describe(exc)}")
                continue
            latency_ms = (time.monotonic() - frame.received) * 1000.0
            self._camera_stats[frame.camera].add_published(latency_ms, timings["forward"], pipeline_ms)

    def _fail_batch(self, frames: list[Frame], exc: Exception) -> None:
        for frame in frames:
            self._camera_stats[frame.camera].count("failed")
        if self._warnings.allow("inference") is not None:
            self.get_logger().error(f"inference failed on a batch of {len(frames)}: {_describe(exc)}")

    def _publish_outputs(self, frame: Frame, result: Any) -> None:
        outputs = self._outputs[frame.camera]
        header = frame.header
        det = result.detections
        outputs.detections.publish(
            conversions.detections_to_msg(header, det.boxes, det.scores, det.class_ids, self._pipeline.class_names)
        )
        seg = result.seg_mask
        # Image outputs nobody listens to are not built: each is a full-resolution copy.
        if outputs.segmentation.get_subscription_count():
            outputs.segmentation.publish(conversions.array_to_image(seg, header, "mono8"))
        for publisher, class_id in ((outputs.drivable, self._drivable_id), (outputs.lane, self._lane_id)):
            if publisher is not None and publisher.get_subscription_count():
                publisher.publish(conversions.array_to_image(conversions.class_mask(seg, class_id), header, "mono8"))
        if outputs.overlay is not None and outputs.overlay.get_subscription_count():
            outputs.overlay.publish(conversions.array_to_image(self._overlay(frame, result), header, "bgr8"))
        self._ground.publish(frame.camera, header, result)

    def _overlay(self, frame: Frame, result: Any) -> np.ndarray:
        from hybridnets_ros.inference.visualize import draw_overlay  # loaded with the pipeline by now: no cost

        # draw_overlay leaves its input alone, so a bgr8 frame is drawn from as it is (no full-frame copy).
        image = frame.image if frame.encoding == "bgr8" else conversions.to_bgr8(frame.image, frame.encoding)
        return draw_overlay(image, result, self._pipeline.class_names, self._pipeline.seg_names)

    # ---- latched and periodic outputs -------------------------------------------------------------------------

    def _publish_label_info(self) -> None:
        header = Header(stamp=self.get_clock().now().to_msg())
        self._label_info_pub.publish(conversions.label_info_msg(
            header, self._pipeline.class_names, self._pipeline.seg_names, self._live["score_threshold"]))

    def _publish_diagnostics(self) -> None:
        name = self.get_fully_qualified_name()
        statuses = []
        for camera, stats in self._camera_stats.items():
            report: dict[str, Any] = stats.report()
            info = self._camera_info.get(camera)
            report["camera_info"] = f"{info.width}x{info.height}" if info is not None else "none"
            report["ground"] = self._ground.status(camera) if self._ground is not None else "not configured"
            statuses.append(diagnostics.camera_status(name, camera, report))
        statuses.append(diagnostics.model_status(name, self._model_info, self._model_stats.report()))
        self._diagnostics_pub.publish(diagnostics.diagnostic_array(self.get_clock().now().to_msg(), statuses))


def _describe(exc: BaseException) -> str:
    """One line: the exception's kind and its message (our own errors already name the file, problem and remedy)."""
    if isinstance(exc, ConfigureError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _ignore_exit_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _ExitRequest:
    """SIGINT/SIGTERM handler for spinning: it only records the request. Raising from it could surface inside
    rclpy's C++ calls as an unrelated error, and rclpy's own handlers did not always wake the executor (a node left
    waiting in rcl_wait after SIGINT, about one stop in six in test_node_lifecycle)."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: object) -> None:
        self.requested = True

    def install(self) -> None:
        signal.signal(signal.SIGINT, self)
        signal.signal(signal.SIGTERM, self)


def _spin(node: HybridNetsNode) -> None:
    """Run the node's callbacks until SIGINT/SIGTERM or a shutdown of the context. The executor comes back to Python
    every ``SPIN_PERIOD_S``, where the signal handler runs."""
    exit_request = _ExitRequest()
    exit_request.install()
    executor = rclpy.get_global_executor()
    executor.add_node(node)
    try:
        while rclpy.ok() and not exit_request.requested:
            executor.spin_once(timeout_sec=SPIN_PERIOD_S)
    finally:
        executor.remove_node(node)


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of ``hybridnets_node``; returns the process exit code."""
    configure_logging()  # the library's Python logs; the node itself logs through rclpy
    try:
        # Until the node is up, a signal is a KeyboardInterrupt wherever the main thread is (a configure is then
        # abandoned with the context intact, so the clean-up below is quiet); while spinning it is a request that
        # the loop of _spin checks (rclpy installs no handlers of its own).
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except RuntimeError as exc:  # rcl's argument errors, e.g. a --params-file that does not exist
        reason = re.sub(r",? at \S+:\d+", "", str(exc))  # rcl appends its source locations
        print(f"[ERROR] [{NODE_NAME}]: cannot start: {reason} (check the --ros-args; a --params-file must name an "
              "existing YAML file)", file=sys.stderr)
        return EXIT_BAD_INPUT
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    node = None
    try:
        try:
            node = HybridNetsNode()
        except Exception as exc:  # a bad parameter file or override
            rclpy.logging.get_logger(NODE_NAME).error(f"cannot start: {_describe(exc)}")
            return EXIT_BAD_INPUT
        if node.get_parameter("autostart").value:
            started = node.autostart()
            if not rclpy.ok():  # SIGTERM or Ctrl-C during start-up: a requested exit, not a failure
                return EXIT_OK
            if not started:
                node.get_logger().error("autostart failed: exiting (start with -p autostart:=false to keep the "
                                        "node alive for the lifecycle services)")
                return EXIT_FAILURE
        _spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():
            raise
        # the context was shut down (a signal) in the middle of a transition: a requested exit
    finally:
        _ignore_exit_signals()  # a second Ctrl-C or a SIGTERM must not interrupt the clean-up half-way
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
