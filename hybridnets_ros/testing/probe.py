"""The probe: an rclpy node in this process that feeds the hybridnets node's cameras, records everything it
publishes and calls its lifecycle and parameter services; ``running_node`` starts the node with a probe matched to
it."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import SetParametersResult
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.subscription import Subscription
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from hybridnets_ros.ros.diagnostics import status_values
from hybridnets_ros.ros.node import LABEL_INFO_QOS, NODE_NAME
from hybridnets_ros.testing.background_node import BackgroundNode
from hybridnets_ros.testing.node_process import NodeProcess

IMAGE_OUTPUTS = ("segmentation", "drivable_area/mask", "lane_lines/mask")
RELIABLE_INPUT_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
OUTPUT_QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)  # deep: a test reads outputs in bursts


class NodeProbe(BackgroundNode):
    """A background rclpy node that feeds the hybridnets node's cameras and records everything it publishes, keyed
    by topic relative to the namespace (``camera/detections``, ``label_info``, ``/diagnostics``)."""

    def __init__(
        self,
        env: Mapping[str, str],
        cameras: Sequence[str] = ("camera",),
        namespace: str = "",
        compressed: Iterable[str] = (),
        input_qos: QoSProfile = RELIABLE_INPUT_QOS,
        image_outputs: Sequence[str] = IMAGE_OUTPUTS,
        overlay: bool = False,
        label_info: bool = True,
        node_name: str = "hybridnets_probe",
    ) -> None:
        self._target = f"{namespace.rstrip('/')}/{NODE_NAME}" if namespace else NODE_NAME
        self._cond = threading.Condition()
        self.received: dict[str, list[tuple[float, Any]]] = {}
        self.subscriptions: list[Subscription] = []
        super().__init__(env, node_name, namespace)
        compressed = set(compressed)
        self.publishers = {
            c: self.node.create_publisher(CompressedImage, f"{c}/image_raw/compressed", input_qos) if c in compressed
            else self.node.create_publisher(Image, f"{c}/image_raw", input_qos)
            for c in cameras
        }
        outputs = list(image_outputs) + (["overlay"] if overlay else [])
        for camera in cameras:
            self._subscribe(Detection2DArray, f"{camera}/detections", OUTPUT_QOS)
            for output in outputs:
                self._subscribe(Image, f"{camera}/{output}", OUTPUT_QOS)
        if label_info:
            self.subscribe_label_info()
        self._subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=50))

    def subscribe_label_info(self) -> None:
        self._subscribe(LabelInfo, "label_info", LABEL_INFO_QOS)

    def subscribe(self, msg_type: type, topic: str, qos: QoSProfile = OUTPUT_QOS) -> None:
        """Also record ``topic`` (an output the constructor does not subscribe to); ``wait_matched`` then waits for
        its publisher too."""
        self._subscribe(msg_type, topic, qos)

    def _subscribe(self, msg_type: type, topic: str, qos: QoSProfile) -> None:
        def store(msg: Any, topic: str = topic) -> None:
            with self._cond:
                self.received.setdefault(topic, []).append((time.monotonic(), msg))
                self._cond.notify_all()

        self.subscriptions.append(self.node.create_subscription(msg_type, topic, store, qos))

    # ---- waiting ----------------------------------------------------------------------------------------------

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` (re-checked on every received message, at least every 50 ms) or timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True

    def wait_matched(self, timeout: float = 20.0) -> bool:
        """Every image publisher has the node as subscriber and every output subscription has the node as publisher."""
        def matched() -> bool:
            return all(p.get_subscription_count() > 0 for p in self.publishers.values()) and all(
                s.get_publisher_count() > 0 for s in self.subscriptions if s.topic_name != "/diagnostics"
            )
        return self.wait_until(matched, timeout)

    def messages(self, topic: str) -> list[Any]:
        with self._cond:
            return [m for _, m in self.received.get(topic, [])]

    def _lookup(self, topic: str, header: Header) -> tuple[float, Any] | None:
        with self._cond:
            return next(((t, m) for t, m in self.received.get(topic, []) if m.header == header), None)

    def find(self, topic: str, header: Header) -> Any | None:
        """The message on ``topic`` whose header equals ``header`` (stamp and frame_id)."""
        found = self._lookup(topic, header)
        return None if found is None else found[1]

    def arrival(self, topic: str, header: Header) -> float | None:
        """When (``time.monotonic()``) that message arrived."""
        found = self._lookup(topic, header)
        return None if found is None else found[0]

    def wait_for_output(self, topic: str, header: Header, timeout: float) -> Any | None:
        self.wait_until(lambda: self.find(topic, header) is not None, timeout)
        return self.find(topic, header)

    def diagnostics(self, name_suffix: str, after: float = 0.0) -> dict[str, str] | None:
        """Values of the newest diagnostics status whose name ends with ``name_suffix``, received after ``after``."""
        with self._cond:
            for t, msg in reversed(self.received.get("/diagnostics", [])):
                if t < after:
                    break
                for status in msg.status:
                    if status.name.endswith(name_suffix):
                        return status_values(status)
        return None

    def wait_for_diagnostics(self, name_suffix: str, timeout: float,
                             predicate: Callable[[dict[str, str]], bool] = lambda v: True) -> dict[str, str] | None:
        after = time.monotonic()
        found: list[dict[str, str]] = []

        def ready() -> bool:
            values = self.diagnostics(name_suffix, after)
            if values is not None and predicate(values):
                found[:] = [values]
                return True
            return False

        self.wait_until(ready, timeout)
        return found[0] if found else None

    # ---- sending ----------------------------------------------------------------------------------------------

    def publish(self, camera: str, msg: Image | CompressedImage) -> Header:
        self.publishers[camera].publish(msg)
        return msg.header

    # ---- services ---------------------------------------------------------------------------------------------

    def _call(self, srv_type: type, name: str, request: Any, timeout: float) -> Any | None:
        client = self.node.create_client(srv_type, f"/{self._target.lstrip('/')}/{name}")
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                return None
            future = client.call_async(request)
            done = threading.Event()
            future.add_done_callback(lambda _: done.set())
            return future.result() if done.wait(timeout) else None
        finally:
            self.node.destroy_client(client)

    def change_state(self, transition_id: int, timeout: float = 60.0) -> bool | None:
        """Request a lifecycle transition; True/False as the node answered, None when it did not answer in time."""
        request = ChangeState.Request()
        request.transition.id = transition_id
        response = self._call(ChangeState, "change_state", request, timeout)
        return None if response is None else response.success

    def get_state(self, timeout: float = 10.0) -> str | None:
        response = self._call(GetState, "get_state", GetState.Request(), timeout)
        return None if response is None else response.current_state.label

    def set_parameters(self, values: Mapping[str, Any], timeout: float = 10.0) -> list[SetParametersResult] | None:
        request = SetParameters.Request()
        request.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        response = self._call(SetParameters, "set_parameters", request, timeout)
        return None if response is None else list(response.results)


@contextmanager
def running_node(
    env: Mapping[str, str],
    log_dir: Path,
    parameters: Mapping[str, Any],
    probe_options: Mapping[str, Any] | None = None,
    params_file: Path | None = None,
    timeout: float = 120.0,
    probe_env: Mapping[str, str] | None = None,
) -> Iterator[tuple[NodeProcess, NodeProbe]]:
    """The node as a subprocess (environment ``env``) and a probe (``probe_env``, default ``env``) whose topics all
    matched it; both are always torn down (SIGINT, then kill). A ``namespace`` in ``probe_options`` applies to both."""
    namespace = (probe_options or {}).get("namespace", "")
    node = NodeProcess(env, Path(log_dir) / "node.log", parameters, params_file, namespace)
    try:
        with NodeProbe(probe_env if probe_env is not None else env, **(probe_options or {})) as probe:
            if not probe.wait_matched(timeout):
                raise RuntimeError(f"the node's topics did not match within {timeout:.0f} s; its output:\n{node.log()}")
            yield node, probe
    finally:
        node.stop()
