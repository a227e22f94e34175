"""Ground-plane geometry without ROS or a network: exact synthetic cameras, ground-truth masks in, metres out.

Masks are drawn by projecting known ground shapes with OpenCV (cv2.projectPoints, independent of the package's own
projection), so each result can only be as good as pixel quantisation allows.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from hybridnets_ros.ground.camera import CameraModelError, camera_model
from hybridnets_ros.ground.contacts import contact_rows, ground_contacts
from hybridnets_ros.ground.grid import FREE, OCCUPIED, UNKNOWN, GridSpec, occupancy
from hybridnets_ros.ground.lanes import LaneSpec, lane_polylines
from hybridnets_ros.ground.pose import (
    CameraPoseError,
    parse_body_pose,
    pose_from_body,
    pose_from_transform,
    quaternion_from_rotation,
)
from hybridnets_ros.ground.projector import GroundGeometryError, GroundProjector, ProjectorCache

WIDTH, HEIGHT = 1280, 720
FOCAL = 900.0
K = np.array([[FOCAL, 0.0, 640.0], [0.0, FOCAL, 360.0], [0.0, 0.0, 1.0]])
LINES_Y = (5.25, 1.75, -1.75, -5.25)  # lane lines, metres left of the camera
PAINT = 0.15  # m


def _model(d=(), distortion="plumb_bob", size=(WIDTH, HEIGHT), **kwargs):
    model, _ = camera_model(k=K, d=np.array(d, float), distortion_model=distortion, calib_size=(WIDTH, HEIGHT),
                            image_size=size, **kwargs)
    return model


def _draw(model, pose, polygons, value, mask):
    """Fill ground polygons (each (P,2) x, y in metres, densely sampled) into mask via cv2.projectPoints."""
    rvec, _ = cv2.Rodrigues(pose.rotation.T)
    tvec = -pose.rotation.T @ pose.position
    for polygon in polygons:
        ground = np.concatenate([polygon, np.zeros((len(polygon), 1))], axis=1)
        if model.distortion_model == "equidistant":
            uv, _ = cv2.fisheye.projectPoints(ground.reshape(-1, 1, 3), rvec, tvec, model.k, model.d)
        else:
            uv, _ = cv2.projectPoints(ground, rvec, tvec, model.k, model.d if model.d.size else None)
        uv = (uv.reshape(-1, 2) - model.offset) / model.scale
        cv2.fillPoly(mask, [np.rint(uv * 16).astype(np.int32)], value, cv2.LINE_8, shift=4)
    return mask


def _strip(y_centre, half_width, x0=4.0, x1=60.0):
    """Outline (P,2) of the ground rectangle [x0, x1] x [y_centre -+ half_width], every edge densely sampled (lines
    on the ground are curves in a distorted image)."""
    x = np.linspace(x0, x1, 400)
    y = np.linspace(y_centre - half_width, y_centre + half_width, 100)
    return np.concatenate([np.stack([x, np.full_like(x, y[0])], 1), np.stack([np.full_like(y, x1), y], 1),
                           np.stack([x[::-1], np.full_like(x, y[-1])], 1), np.stack([np.full_like(y, x0), y[::-1]], 1)])


# ---- camera model ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("distortion, d", [
    ("plumb_bob", (-0.28, 0.07, 0.0005, -0.0003, 0.0)),
    ("rational_polynomial", (-0.2, 0.05, 0.0002, 0.0001, 0.0, 0.1, 0.01, 0.002)),
    ("equidistant", (0.05, -0.01, 0.002, -0.0005)),
])
def test_distortion_models_round_trip_pixels_to_rays(distortion, d) -> None:
    model = _model(d, distortion)
    u, v = np.meshgrid(np.linspace(100, 1180, 12), np.linspace(60, 660, 9))
    normalized = model.normalized(u.ravel(), v.ravel())
    rays = np.concatenate([normalized, np.ones((len(normalized), 1))], axis=1)
    back = model.project(rays * 7.0)
    assert np.abs(back - np.stack([u.ravel(), v.ravel()], 1)).max() < 1e-4


def test_binning_roi_and_resize_map_onto_the_calibration() -> None:
    full = _model()
    # A 2x2-binned readout of the region x 320..959, y 180..539, published at 1.5x its binned size (480x270).
    sub, note = camera_model(k=K, d=np.zeros(5), distortion_model="plumb_bob", calib_size=(WIDTH, HEIGHT),
                             image_size=(480, 270), binning=(2, 2), roi=(320, 180, 640, 360))
    assert note is not None and "scaled" in note
    # Published pixel (u, v) covers calibration pixels whose centre is at 320 + (u + 0.5) * 4/3 - 0.5.
    u, v = np.array([0.0, 239.5, 479.0]), np.array([0.0, 134.5, 269.0])
    expected = full.normalized(320 + (u + 0.5) * 4 / 3 - 0.5, 180 + (v + 0.5) * 4 / 3 - 0.5)
    assert np.allclose(sub.normalized(u, v), expected, atol=1e-12)


def test_half_size_image_is_scaled_and_said_so() -> None:
    half, note = camera_model(k=K, d=np.zeros(5), distortion_model="plumb_bob", calib_size=(WIDTH, HEIGHT),
                              image_size=(640, 360))
    assert "640x360" in note and "1280x720" in note
    # Calibration pixel centre 640 is the published edge coordinate 320.25, i.e. the published pixel 319.75.
    assert np.allclose(half.normalized(np.array([319.75]), np.array([179.75])), [[0.0, 0.0]], atol=1e-12)


@pytest.mark.parametrize("kwargs, words", [
    ({"k": np.zeros(9)}, "not a camera matrix"),
    ({"image_size": (1280, 1024)}, "aspect ratio"),
    ({"distortion_model": "fisheye9", "d": np.ones(5) * 0.1}, "not supported"),
    ({"distortion_model": "equidistant", "d": np.ones(5) * 0.1}, "needs 4"),
    ({"calib_size": (0, 0)}, "empty"),
])
def test_unusable_camera_info_is_refused_with_a_reason(kwargs, words) -> None:
    args = {"k": K, "d": np.zeros(5), "distortion_model": "plumb_bob", "calib_size": (WIDTH, HEIGHT),
            "image_size": (WIDTH, HEIGHT)} | kwargs
    with pytest.raises(CameraModelError, match=words):
        camera_model(**args)


# ---- pose -----------------------------------------------------------------------------------------------------

def test_level_camera_looks_along_x_with_image_right_to_the_right() -> None:
    pose = pose_from_body([0, 0, 1.5, 0, 0, 0])
    assert np.allclose(pose.rotation[:, 2], [1, 0, 0])  # optical z = forward
    assert np.allclose(pose.rotation[:, 0], [0, -1, 0])  # optical x = right = -y
    assert np.allclose(pose.rotation[:, 1], [0, 0, -1])  # optical y = down


def test_transform_and_body_pose_agree() -> None:
    body = pose_from_body([1.2, -0.3, 1.4, 0.03, 0.08, -0.05])
    from_tf = pose_from_transform(body.position, quaternion_from_rotation(body.rotation), "tf")
    assert np.allclose(from_tf.rotation, body.rotation, atol=1e-12)


@pytest.mark.parametrize("text, values", [("[0, 0, 1.5, 0, 0.05, 0]", [0, 0, 1.5, 0, 0.05, 0]),
                                          ("0 0 1.4 0.01 0 0", [0, 0, 1.4, 0.01, 0, 0]), ("", [])])
def test_pose_text_of_launch_arguments_is_parsed(text, values) -> None:
    assert parse_body_pose(text) == values


@pytest.mark.parametrize("text, words", [("[0, 0, 1.5]", "6 finite numbers"), ("[0, 0, high, 0, 0, 0]", "not a list")])
def test_bad_pose_text_is_refused_with_a_reason(text, words) -> None:
    with pytest.raises(CameraPoseError, match=words):
        parse_body_pose(text)


@pytest.mark.parametrize("values", [[0, 0, 1.5, 0, 0], [0, 0, float("nan"), 0, 0, 0]])
def test_malformed_pose_is_refused(values) -> None:
    with pytest.raises(CameraPoseError, match="6 finite numbers"):
        pose_from_body(values)


# ---- ray-to-ground lookup -------------------------------------------------------------------------------------

def test_level_camera_rows_map_to_the_closed_form_distance() -> None:
    projector = GroundProjector(_model(), pose_from_body([0, 0, 1.5, 0, 0, 0]), max_range=80.0)
    rows = np.array([380, 400, 450, 600, 719])
    x = projector.points[rows, 640, 0]
    assert np.allclose(x, FOCAL * 1.5 / (rows - 360.0), rtol=1e-5)
    assert np.all(np.isnan(projector.points[:361, :, :])), "rows at and above the horizon must be invalid"
    far_row = 360 + int(np.floor(FOCAL * 1.5 / 80.0))  # at 80 m; rows above it land beyond max_range
    assert np.isnan(projector.points[far_row - 1, 640, 0]) and not np.isnan(projector.points[far_row + 1, 640, 0])
    assert np.all(projector.points[projector.valid][:, 2] == 0.0)


def test_camera_looking_at_the_sky_or_under_the_road_is_refused() -> None:
    with pytest.raises(GroundGeometryError, match="points the camera away"):
        GroundProjector(_model(), pose_from_body([0, 0, 1.5, 0, -1.2, 0]), max_range=50.0)
    with pytest.raises(GroundGeometryError, match="above the ground"):
        GroundProjector(_model(), pose_from_body([0, 0, -0.5, 0, 0, 0]), max_range=50.0)


def test_cache_builds_once_per_key() -> None:
    cache = ProjectorCache()
    built = []

    def build():
        built.append(1)
        return GroundProjector(_model(size=(320, 180)), pose_from_body([0, 0, 1.5, 0, 0.1, 0]), 50.0)

    first = cache.get(("a", 1), build)
    assert cache.get(("a", 1), build) is first and len(built) == 1
    cache.get(("b", 1), build)
    assert len(built) == 2


# ---- outputs from ground-truth masks --------------------------------------------------------------------------

CAMERAS = {
    "level": ((), "plumb_bob", [0.0, 0.0, 1.5, 0.0, 0.0, 0.0]),
    "pitched_rolled": ((), "plumb_bob", [1.0, 0.2, 1.4, np.deg2rad(2.0), np.deg2rad(3.0), np.deg2rad(1.0)]),
    "distorted": ((-0.25, 0.06, 0.0, 0.0, 0.0), "plumb_bob", [0.0, 0.0, 1.6, 0.0, np.deg2rad(4.0), 0.0]),
    "fisheye": ((0.02, -0.005, 0.001, 0.0), "equidistant", [0.0, 0.0, 1.5, 0.0, np.deg2rad(2.0), 0.0]),
}


@pytest.fixture(params=sorted(CAMERAS))
def camera(request):
    d, distortion, body = CAMERAS[request.param]
    model = _model(d, distortion)
    pose = pose_from_body(body)
    return model, pose, GroundProjector(model, pose, max_range=60.0)


def test_lane_polylines_from_true_masks_lie_on_the_true_lines(camera) -> None:
    model, pose, projector = camera
    mask = _draw(model, pose, [_strip(y, PAINT / 2) for y in LINES_Y], 1, np.zeros((HEIGHT, WIDTH), np.uint8))
    lane = mask.astype(bool) & projector.valid
    spec = LaneSpec(x_min=0.0, x_max=60.0, y_min=-15.0, y_max=15.0)
    lines = lane_polylines(projector.points[lane], np.ones(lane.sum()), spec)
    assert len(lines) == len(LINES_Y), [ln.points[[0, -1]] for ln in lines]
    for line, y_true in zip(lines, LINES_Y):  # left to right = descending y
        near = line.points[np.abs(line.points[:, 0] - 10.0) < 1.0]
        far = line.points[np.abs(line.points[:, 0] - 30.0) < 1.0]
        assert len(near) and len(far)
        # Pixel footprint on the ground at 10 m is ~1 cm across; at 30 m ~3 cm (plus fit error).
        assert np.abs(near[:, 1] - y_true).max() < 0.05
        assert np.abs(far[:, 1] - y_true).max() < 0.1
        assert np.allclose(np.diff(line.points[:, 0]), 0.5, atol=1e-5)


def test_occupancy_grid_matches_the_true_road(camera) -> None:
    model, pose, projector = camera
    road_half = 6.0
    mask = _draw(model, pose, [_strip(0.0, road_half, 3.0, 60.0)], 1, np.zeros((HEIGHT, WIDTH), np.uint8))
    spec = GridSpec(resolution=0.1, x_min=0.0, x_max=50.0, y_min=-15.0, y_max=15.0)
    grid = occupancy(projector, spec, mask, drivable_ids=(1,))
    centres = spec.centres().reshape(*spec.shape, 2)
    truth = (np.abs(centres[..., 1]) < road_half) & (centres[..., 0] > 3.0)
    seen = grid != UNKNOWN
    assert seen.mean() > 0.3
    free = grid == FREE
    iou = (free & truth & seen).sum() / ((free | truth) & seen).sum()
    assert iou > 0.98
    assert np.all(grid[seen & ~truth & (np.abs(np.abs(centres[..., 1]) - road_half) > 0.3)] == OCCUPIED)
    # Cells behind the camera and far outside the view are not seen.
    assert np.all(grid[centres[..., 0] < pose.position[0]] == UNKNOWN)


def test_vehicle_hides_the_road_behind_it() -> None:
    model = _model()
    projector = GroundProjector(model, pose_from_body([0, 0, 1.5, 0, 0, 0]), 60.0)
    mask = np.ones((HEIGHT, WIDTH), np.uint8)
    # A 2 m wide, 1.5 m tall vehicle whose rear stands 20 m ahead.
    box = np.array([[640 - FOCAL * 1.0 / 20, 360 + FOCAL * (1.5 - 1.5) / 20, 640 + FOCAL * 1.0 / 20,
                     360 + FOCAL * 1.5 / 20]])
    spec = GridSpec(resolution=0.1, x_min=0.0, x_max=50.0, y_min=-5.0, y_max=5.0)
    grid = occupancy(projector, spec, mask, (1,), box)
    centres = spec.centres().reshape(*spec.shape, 2)
    behind = (centres[..., 0] > 21.0) & (np.abs(centres[..., 1]) < 0.5)
    before = (centres[..., 0] < 19.5) & (centres[..., 0] > 5.0) & (np.abs(centres[..., 1]) < 0.5)
    assert np.all(grid[behind] == UNKNOWN)
    assert np.all(grid[before] == FREE)


def test_contact_points_of_boxes_are_where_the_vehicles_stand(camera) -> None:
    model, pose, projector = camera
    truth = np.array([[8.0, 0.0], [15.0, -3.5], [25.0, 3.5], [40.0, 0.0]])
    # The bottom centre of each box is the projection of the contact point; the box is 1.8 m wide there.
    rvec, _ = cv2.Rodrigues(pose.rotation.T)
    tvec = -pose.rotation.T @ pose.position
    ground = np.concatenate([truth, np.zeros((len(truth), 1))], axis=1)
    if model.distortion_model == "equidistant":
        uv = cv2.fisheye.projectPoints(ground.reshape(-1, 1, 3), rvec, tvec, model.k, model.d)[0].reshape(-1, 2)
    else:
        uv = cv2.projectPoints(ground, rvec, tvec, model.k, model.d if model.d.size else None)[0].reshape(-1, 2)
    half = FOCAL * 0.9 / pose.to_optical(ground)[:, 2]
    boxes = np.stack([uv[:, 0] - half, uv[:, 1] - 2 * half, uv[:, 0] + half, uv[:, 1]], axis=1)
    contacts = ground_contacts(projector, boxes)
    assert contacts.valid.all()
    assert np.abs(contacts.points[:, :2] - truth).max() < 1e-6
    assert np.allclose(contacts.width, 1.8, rtol=0.1) and np.allclose(contacts.height, 1.8, rtol=0.1)


# ---- where a detected vehicle meets the road ----------------------------------------------------------------

ROAD, LANE = 1, 2


def _vehicle(mask, x1, y1, x2, body_bottom, wheel_bottom):
    """Paint a vehicle seen from behind into a class mask: a body hiding the road across the whole box down to
    ``body_bottom``, and two wheels in its outer quarters down to ``wheel_bottom`` (road visible between them)."""
    width = x2 - x1
    mask[y1:body_bottom, x1:x2] = 0
    for left in (x1 + width // 20, x2 - width // 4):
        mask[body_bottom:wheel_bottom, left:left + width // 5] = 0


def test_contact_row_is_where_the_vehicle_starts_hiding_the_road() -> None:
    mask = np.full((HEIGHT, WIDTH), ROAD, np.uint8)
    mask[:, 590:620] = LANE  # a lane marking under one vehicle is road too
    # (x1, y1, x2, body bottom, wheel bottom) in pixels; boxes end some rows below the wheels (a shadow taken in),
    # the last one clipped by the image's left edge.
    vehicles = [(500, 300, 700, 440, 452), (900, 380, 960, 415, 419), (100, 200, 420, 560, 600), (-30, 350, 40, 390,
                                                                                                      396)]
    for x1, y1, x2, body, wheels in vehicles:
        _vehicle(mask, max(x1, 0), y1, x2, body, wheels)
    boxes = np.array([[x1, y1, x2, wheels + extra] for (x1, y1, x2, _, wheels), extra in
                      zip(vehicles, (6.4, 2.0, 14.7, 3.2))], np.float64)
    boxes[3, 0] = 0.0
    rows = contact_rows(boxes, mask, (ROAD, LANE))
    np.testing.assert_array_equal(rows, [v[4] for v in vehicles])
    # Each box alone gives the same row (the boxes are searched together, not through each other).
    assert [contact_rows(box[None], mask, (ROAD, LANE))[0] for box in boxes] == rows.tolist()
    # Without the lane class as road, the marking under the first vehicle is already "hidden road" at its bottom.
    assert contact_rows(boxes[:1], mask, (ROAD,))[0] == boxes[0, 3]
    # The ground contact stands at that row: for a level camera, x = f * height / (row - cy).
    projector = GroundProjector(_model(), pose_from_body([0, 0, 1.5, 0, 0, 0]), 60.0)
    contacts = ground_contacts(projector, boxes, rows)
    assert np.allclose(contacts.points[:, 0], FOCAL * 1.5 / (rows - 360.0), rtol=1e-9)
    assert np.allclose(ground_contacts(projector, boxes).points[:, 0], FOCAL * 1.5 / (boxes[:, 3] - 360.0))


def test_box_bottom_is_kept_where_the_mask_gives_no_evidence() -> None:
    boxes = np.array([[500.0, 300.0, 700.0, 460.3], [800.0, 380.0, 900.0, 430.0], [1200.0, 600.0, 1280.0, 720.0]])
    # All road, the vehicles not seen in the mask: no row hides the road.
    road = np.full((HEIGHT, WIDTH), ROAD, np.uint8)
    np.testing.assert_array_equal(contact_rows(boxes, road, (ROAD,)), boxes[:, 3])
    # Vehicles on non-drivable ground (or whose bottom a nearer vehicle hides): nothing to rise from.
    verge = np.zeros((HEIGHT, WIDTH), np.uint8)
    for x1, y1, x2, y2 in boxes.astype(int):
        _vehicle(verge, x1, y1, x2, y2 - 20, y2 - 10)
    np.testing.assert_array_equal(contact_rows(boxes, verge, (ROAD,)), boxes[:, 3])
    # The road hidden only above the lower half of the box: the box bottom too.
    high = np.full((HEIGHT, WIDTH), ROAD, np.uint8)
    high[300:360, 500:700] = 0
    assert contact_rows(boxes[:1], high, (ROAD,))[0] == boxes[0, 3]
    assert contact_rows(np.zeros((0, 4)), road, (ROAD,)).shape == (0,)


def test_true_boxes_on_true_masks_keep_their_bottoms() -> None:
    """On the synthetic scenes' own labels the box bottom is where the wheels meet the road: nothing moves."""
    from hybridnets_ros.synth.ground import generate_ground_scene

    for seed in range(3):
        scene, _ = generate_ground_scene(seed, (WIDTH, HEIGHT))
        mask = np.where(scene.lane_mask > 0, LANE, np.where(scene.drivable_mask > 0, ROAD, 0)).astype(np.uint8)
        assert len(scene.boxes)
        np.testing.assert_array_equal(contact_rows(scene.boxes, mask, (ROAD, LANE)), scene.boxes[:, 3])
