"""Ground-plane outputs through the real node (its executable, the bundled model) between processes.

Held-out synthetic scenes on flat roads, each on its own camera with its own CameraInfo and camera pose, are
published as a user's camera would; the node's ground outputs are compared with the scenes' ground truth in
metres (issue 14's floors). The same image also goes to a camera whose pose comes from /tf_static (a chain of two
transforms) instead of the parameter, and to cameras whose geometry is unusable (pose at the sky, K of zeros, no
CameraInfo): those warn, publish no ground outputs, and keep every image output and the other cameras going.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import OccupancyGrid
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from vision_msgs.msg import Detection3DArray
from visualization_msgs.msg import MarkerArray

from hybridnets_ros.ground.contacts import contact_rows
from hybridnets_ros.ground.pose import pose_from_body, quaternion_from_rotation
from hybridnets_ros.inference.box_pairing import box_agreement
from hybridnets_ros.ros.ground_accuracy import (
    LANE,
    MAX_DISTANCE,
    MAX_RANGE,
    MIN_IOU,
    POSED_EVERY,
    ROAD,
    held_out_scene,
    scene_projector,
)

tf2_msgs = pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs is not installed: run `make setup`")

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED = REPO_ROOT / "models" / "hybridnets_d0_synth.pt"
NODE_PARAMS = REPO_ROOT / "config" / "hybridnets.yaml"
SIZE = (1280, 720)
TIMEOUT = 180.0
LEVEL = tuple(f"s{i}" for i in range(8))
TF_CAMERA, ROLLED = "tf", "rolled"
BROKEN = {"sky": "points the camera away", "zero_k": "not a camera matrix", "no_info": "no CameraInfo"}
GROUND_TOPICS = {"ground/points": PointCloud2, "drivable_area/grid": OccupancyGrid,
                 "lane_lines/polylines": MarkerArray, "lane_lines/points": PointCloud2,
                 "detections_3d": Detection3DArray, "segmentation/confidence": Image}


@pytest.fixture(scope="module")
def scenes() -> dict:
    """The held-out scenes 0-7 (level cameras) and 8 (rolled and pitched by 2 degrees)."""
    assert len(LEVEL) == POSED_EVERY - 1
    return {camera: held_out_scene(i, SIZE) for i, camera in enumerate((*LEVEL, ROLLED))}


def _camera_info(info: dict, header, k: list[float] | None = None) -> CameraInfo:
    return CameraInfo(header=header, width=info["width"], height=info["height"],
                      distortion_model=info["distortion_model"], d=info["d"], k=k if k is not None else info["k"],
                      r=info["r"], p=info["p"])


def _tf_static(pose_values: list[float]) -> object:
    """/tf_static: base_footprint -> tf_body (the body pose) -> tf_optical (the fixed optical rotation)."""
    body = pose_from_body(pose_values)
    optical_in_body = pose_from_body([0, 0, 0, 0, 0, 0]).rotation

    def stamped(parent: str, child: str, translation, rotation) -> TransformStamped:
        t = TransformStamped()
        t.header.frame_id, t.child_frame_id = parent, child
        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = (float(v) for v in
                                                                                           translation)
        q = quaternion_from_rotation(rotation)
        t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z, t.transform.rotation.w = q
        return t

    body_rotation = body.rotation @ optical_in_body.T
    return tf2_msgs.TFMessage(transforms=[
        stamped("base_footprint", "tf_body", body.position, body_rotation),
        stamped("tf_body", "tf_optical", (0.0, 0.0, 0.0), optical_in_body),
    ])


def _header(msg):
    """A message's header; a MarkerArray's is its first marker's (the DELETEALL the node always sends first)."""
    return msg.markers[0].header if isinstance(msg, MarkerArray) else msg.header


def _by_stamp(probe, topic: str, stamp) -> object | None:
    return next((m for m in probe.messages(topic) if _header(m).stamp == stamp), None)


def _cloud_points(msg: PointCloud2) -> np.ndarray:
    return np.frombuffer(bytes(msg.data), np.float32).reshape(msg.height, msg.width, msg.point_step // 4)[..., :3]


def _grid(msg: OccupancyGrid) -> np.ndarray:
    return np.array(msg.data, np.int8).reshape(msg.info.height, msg.info.width)


def _grid_centres(msg: OccupancyGrid) -> np.ndarray:
    info = msg.info
    x = info.origin.position.x + (np.arange(info.width) + 0.5) * info.resolution
    y = info.origin.position.y + (np.arange(info.height) + 0.5) * info.resolution
    return np.stack(np.meshgrid(x, y), axis=-1)


def _lines(msg: MarkerArray) -> list[np.ndarray]:
    return [np.array([[p.x, p.y] for p in m.points]) for m in msg.markers if m.type == m.LINE_STRIP]


@pytest.mark.slow
def test_ground_outputs_through_the_node(ros_env, tmp_path, scenes) -> None:
    from hybridnets_ros.ros import conversions
    from hybridnets_ros.testing.frames import unique_header
    from hybridnets_ros.testing.probe import running_node

    first = scenes[LEVEL[0]]
    poses = {camera: truth.camera_pose for camera, (_, truth) in scenes.items()}
    poses["sky"] = [0.0, 0.0, 1.5, 0.0, -1.2, 0.0]
    poses["zero_k"] = poses["no_info"] = first[1].camera_pose
    cameras = [*LEVEL, ROLLED, TF_CAMERA, *BROKEN]
    parameters = {"weights": str(BUNDLED), "device": "cpu", "input_qos": "reliable", "max_batch_wait_ms": 0,
                  "cameras": cameras, **{f"{c}.camera_pose": [float(v) for v in p] for c, p in poses.items()}}
    probe_options = {"cameras": tuple(cameras), "image_outputs": ("segmentation",), "label_info": False}
    with running_node(ros_env, tmp_path, parameters, probe_options, params_file=NODE_PARAMS) as (node, probe):
        latched = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        probe.node.create_publisher(tf2_msgs.TFMessage, "/tf_static", latched).publish(_tf_static(poses["s0"]))
        info_publishers = {c: probe.node.create_publisher(CameraInfo, f"{c}/camera_info", 10) for c in cameras}
        for camera in cameras:
            for topic, msg_type in GROUND_TOPICS.items():
                probe.subscribe(msg_type, f"{camera}/{topic}")
        assert probe.wait_matched(TIMEOUT), node.log()

        images = {c: scenes.get(c, first)[0].image_bgr for c in cameras}
        frame_ids = {c: "tf_optical" if c == TF_CAMERA else f"{c}_optical" for c in cameras}
        headers = {}
        # CameraInfo goes out best effort on the node's side: repeat it until the ground outputs show it arrived.
        for attempt in range(5):
            for camera in cameras:
                header = unique_header(frame_id=frame_ids[camera])
                info = scenes.get(camera, first)[1].camera_info
                if camera != "no_info":
                    info_publishers[camera].publish(_camera_info(info, header, [0.0] * 9 if camera == "zero_k"
                                                                 else None))
            time.sleep(0.3)  # let the CameraInfo arrive before the image
            headers = {c: unique_header(frame_id=frame_ids[c]) for c in cameras}
            for camera in cameras:
                probe.publish(camera, conversions.array_to_image(images[camera], headers[camera], "bgr8"))
            ok = probe.wait_until(lambda: all(_by_stamp(probe, f"{c}/drivable_area/grid", headers[c].stamp)
                                              for c in (*LEVEL, ROLLED, TF_CAMERA)), TIMEOUT)
            if ok:
                break
        assert ok, f"ground outputs missing; node log:\n{node.log()}"
        assert probe.wait_until(lambda: all(_by_stamp(probe, f"{c}/{t}", headers[c].stamp)
                                            for c in (*LEVEL, ROLLED, TF_CAMERA) for t in GROUND_TOPICS), TIMEOUT)
        # Every camera's image outputs came, broken geometry or not.
        for camera in cameras:
            assert probe.wait_for_output(f"{camera}/detections", headers[camera], TIMEOUT) is not None, camera
            assert probe.wait_for_output(f"{camera}/segmentation", headers[camera], TIMEOUT) is not None, camera
        outputs = {c: {t: _by_stamp(probe, f"{c}/{t}", headers[c].stamp) for t in GROUND_TOPICS} for c in cameras}
        # The pose source in use, or why there are no ground outputs, is in /diagnostics per camera.
        ground_status = {c: (probe.wait_for_diagnostics(f"camera {c}", TIMEOUT) or {}).get("ground", "")
                         for c in ("s0", TF_CAMERA, "no_info")}
        segmentation = {c: probe.find(f"{c}/segmentation", headers[c]) for c in cameras}
        detections = {c: probe.find(f"{c}/detections", headers[c]) for c in cameras}
        log = node.log()

    # ---- unusable geometry: warned, named, no ground outputs --------------------------------------------------
    for camera, words in BROKEN.items():
        assert f"camera '{camera}': no ground outputs" in log and words in log, (camera, log)
        for topic in GROUND_TOPICS:
            if topic != "segmentation/confidence":
                assert outputs[camera][topic] is None, (camera, topic)
    assert "Traceback" not in log
    assert ground_status["s0"] == "ok: pose from camera_pose parameter", ground_status
    assert ground_status[TF_CAMERA] == "ok: pose from /tf_static (base_footprint <- tf_optical)", ground_status
    assert ground_status["no_info"].startswith("no ground outputs: no CameraInfo"), ground_status

    # ---- contract: stamps, frames, the organised cloud ---------------------------------------------------------
    for camera in (*LEVEL, ROLLED, TF_CAMERA):
        cloud, seg = outputs[camera]["ground/points"], segmentation[camera]
        # What Nav2's semantic_segmentation_layer checks: same size, same stamp as the segmentation.
        assert (cloud.width, cloud.height) == (seg.width, seg.height) == SIZE
        assert cloud.header.stamp == seg.header.stamp and cloud.header.frame_id == "base_footprint"
        for topic in GROUND_TOPICS:
            msg = outputs[camera][topic]
            assert msg is not None, (camera, topic)
            assert _header(msg).stamp == headers[camera].stamp
        confidence = outputs[camera]["segmentation/confidence"]
        assert confidence.header == headers[camera] and (confidence.width, confidence.height) == SIZE
    for camera in LEVEL:
        info = scenes[camera][1].camera_info
        focal, cx, cy, height = info["k"][0], info["k"][2], info["k"][5], scenes[camera][1].camera_pose[2]
        v, u = np.mgrid[0:SIZE[1], 0:SIZE[0]].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            x = focal * height / (v - cy)
            distance = np.hypot(x, x * (u - cx) / focal)
        expected_valid = (v > cy) & (distance <= MAX_RANGE)
        borderline = np.abs(distance - MAX_RANGE) < 1e-3
        points = _cloud_points(outputs[camera]["ground/points"])
        valid = ~np.isnan(points[..., 0])
        assert np.all((valid == expected_valid) | borderline)
        assert np.allclose(points[valid][:, 0], x[valid], rtol=1e-4)
        assert np.all(np.isnan(points[~valid])) and np.all(points[valid][:, 2] == 0.0)

    # ---- /tf_static and the camera_pose parameter give identical outputs ---------------------------------------
    for topic in ("ground/points", "drivable_area/grid", "lane_lines/points"):
        assert bytes(outputs[TF_CAMERA][topic].data) == bytes(outputs["s0"][topic].data), topic
    assert [d.results[0].pose.pose.position.x for d in outputs[TF_CAMERA]["detections_3d"].detections] == \
        [d.results[0].pose.pose.position.x for d in outputs["s0"]["detections_3d"].detections]

    # ---- accuracy against the ground truth (level and 2-degree rolled cameras) --------------------------------
    lateral = {10.0: [], 30.0: []}
    ious, vehicle_errors, raised = {}, [], []
    for camera in (*LEVEL, ROLLED):
        scene, truth = scenes[camera]
        for at, errors in lateral.items():
            # Each line's point nearest to the distance, if the line comes within 2 m of it (the bundled model sees
            # lane lines to 25-30 m), compared with the true line at that point's x.
            for line in _lines(outputs[camera]["lane_lines/polylines"]):
                point = line[np.argmin(np.abs(line[:, 0] - at))]
                truth_y = np.array([np.interp(point[0], t[:, 0], t[:, 1], left=np.nan, right=np.nan)
                                    for t in truth.lane_lines])
                if abs(point[0] - at) <= 2.0 and np.isfinite(truth_y).any():
                    errors.append(float(np.nanmin(np.abs(truth_y - point[1]))))
        grid_msg = outputs[camera]["drivable_area/grid"]
        grid, centres = _grid(grid_msg), _grid_centres(grid_msg)
        left = np.interp(centres[..., 0], truth.road_edges[0][:, 0], truth.road_edges[0][:, 1])
        right = np.interp(centres[..., 0], truth.road_edges[1][:, 0], truth.road_edges[1][:, 1])
        road = (centres[..., 1] < left) & (centres[..., 1] > right) & (centres[..., 0] < truth.visible_depth)
        # Road the camera cannot see (behind a roadside object where the road bends) is not expected in the grid:
        # the true mask through the (separately verified) geometry says which cells show something else.
        road &= _true_grid(truth, scene, grid_msg) != 100
        seen = grid != -1
        free = grid == 0
        ious[camera] = float((free & road & seen).sum() / ((free | road) & seen).sum())
        # Detected vehicles: match each truth box to the detection with the best IoU >= 0.5.
        boxes = conversions.detection_boxes(detections[camera])
        by_id = {int(d.id): d.results[0].pose.pose.position for d in outputs[camera]["detections_3d"].detections}
        if camera in LEVEL:
            # The published contact is exactly the level camera's ray through the box's centre column at the contact
            # row that the published segmentation gives (the box bottom raised to where the road stops).
            focal, cx, cy = truth.camera_info["k"][0], truth.camera_info["k"][2], truth.camera_info["k"][5]
            seg = segmentation[camera]
            rows = contact_rows(boxes, conversions.image_to_array(seg).reshape(seg.height, seg.width), (ROAD, LANE))
            raised.extend(boxes[:, 3] - rows)
            for index, position in by_id.items():
                x1, _, x2, _ = boxes[index]
                x = focal * truth.camera_pose[2] / (rows[index] - cy)
                assert np.allclose([position.x, position.y], [x, -((x1 + x2) / 2 - cx) * x / focal], rtol=1e-5)
        for box, contact in zip(scene.boxes, truth.vehicles):
            true_distance = float(np.hypot(*contact[:2]))
            if true_distance > MAX_DISTANCE or len(boxes) == 0:
                continue
            iou = box_agreement(box[None], boxes, close_px=0.0)[0]
            best = int(np.argmax(iou))
            if iou[best] >= MIN_IOU and best in by_id:
                vehicle_errors.append(abs(np.hypot(by_id[best].x, by_id[best].y) / true_distance - 1))
    median = {at: float(np.median(errors)) for at, errors in lateral.items()}
    vehicle_errors = np.array(vehicle_errors)
    print(f"\nground outputs through the node: lane lateral error median {median[10.0]:.3f} m at 10 m "
          f"({len(lateral[10.0])} lines), {median[30.0]:.3f} m at 30 m ({len(lateral[30.0])}); drivable grid IoU "
          + ", ".join(f"{c} {v:.3f}" for c, v in ious.items())
          + f"; vehicle distance error median {np.median(vehicle_errors):.3f}, max {vehicle_errors.max():.3f}, "
          f"{(vehicle_errors <= 0.05).mean():.0%} within 5 % ({len(vehicle_errors)} detected vehicles <= 40 m); "
          f"contact raised above the box bottom on {sum(r > 0 for r in raised)} of {len(raised)} level-camera boxes")
    assert len(lateral[10.0]) >= 10 and len(lateral[30.0]) >= 3, lateral
    assert median[10.0] <= 0.15 and median[30.0] <= 0.5, lateral
    assert min(ious.values()) >= 0.85, ious
    # Issue 14's goal: vehicle distances within 5 % up to 40 m. The geometry meets it (true boxes land within 2 %,
    # test_synth_ground.py); the bundled model's box bottoms sit 3-15 px low (the shadow in front of each car taken
    # in), 5.4 % median here from the box bottoms alone. Raising each contact to where the drivable mask shows the
    # vehicle starting to hide the road (ground/contacts.py) gives about 2 % on these scenes; the median is held to
    # the goal, and some contacts must really have been raised.
    assert sum(r > 0 for r in raised) >= 5, raised
    assert len(vehicle_errors) >= 10 and np.median(vehicle_errors) <= 0.05, vehicle_errors


def _true_grid(truth, scene, grid_msg: OccupancyGrid) -> np.ndarray:
    """The grid the scene's true drivable mask and boxes give (lane markings are part of its road)."""
    from hybridnets_ros.ground.grid import GridSpec, occupancy

    projector = scene_projector(truth, SIZE)
    grid = grid_msg.info
    spec = GridSpec(grid.resolution, grid.origin.position.x, grid.origin.position.x + grid.width * grid.resolution,
                    grid.origin.position.y, grid.origin.position.y + grid.height * grid.resolution)
    return occupancy(projector, spec, (scene.drivable_mask > 0).astype(np.uint8), (1,), scene.boxes)

