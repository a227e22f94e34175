"""Cost of the ground-plane outputs per frame: ``python -m hybridnets_ros.ros.ground_bench``.

Times what the node does per frame for each ground output, messages included, on a synthetic 1280x720 scene with its
true masks and boxes (the network's own cost is not part of it): the occupancy grid, the lane polylines (markers and
points), detections_3d (contact rows from the mask included), the organised cloud (bytes cached per geometry, so a
header and a copy) and the confidence image. The one-off cost of building a camera's ray-to-ground lookup is
reported separately.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from std_msgs.msg import Header

from hybridnets_ros.ground.camera import camera_model
from hybridnets_ros.ground.contacts import contact_rows, ground_contacts
from hybridnets_ros.ground.grid import GridSpec, occupancy
from hybridnets_ros.ground.lanes import LaneSpec, lane_polylines
from hybridnets_ros.ground.pose import pose_from_body
from hybridnets_ros.ground.projector import GroundProjector
from hybridnets_ros.inference.postprocess import Detections, FrameResult, SegConfidence
from hybridnets_ros.ros import ground_messages
from hybridnets_ros.ros.ground import lane_points
from hybridnets_ros.synth.ground import generate_ground_scene

ROAD, LANE = 1, 2


def _median_ms(work: Callable[[], object], repeats: int) -> float:
    work()  # first call outside the timing (allocations, lazy caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def run(size: tuple[int, int], repeats: int, seed: int) -> dict[str, float]:
    """Median milliseconds per frame of each output, and of building the lookup once."""
    scene, truth = generate_ground_scene(seed, size)
    info = truth.camera_info
    model, _ = camera_model(k=np.array(info["k"]), d=np.array(info["d"]), distortion_model=info["distortion_model"],
                            calib_size=(info["width"], info["height"]), image_size=size)
    pose = pose_from_body(truth.camera_pose)
    start = time.perf_counter()
    projector = GroundProjector(model, pose, max_range=50.0)
    build_ms = (time.perf_counter() - start) * 1e3
    grid = GridSpec(0.1, 0.0, 50.0, -15.0, 15.0)
    lanes = LaneSpec(0.0, 50.0, -15.0, 15.0)
    start = time.perf_counter()
    projector.cell_pixels(grid, grid.centres)
    build_ms += (time.perf_counter() - start) * 1e3
    mask = np.where(scene.lane_mask > 0, LANE, np.where(scene.drivable_mask > 0, ROAD, 0)).astype(np.uint8)
    confidence = SegConfidence(torch.randn(3, 360, 640), "multiclass", (size[1], size[0]))
    # What the pipeline hands over; the lane confidences come from the full-size confidence image, as in the node.
    result = FrameResult(Detections(scene.boxes, np.full(len(scene.boxes), 0.9, np.float32),
                                    np.zeros(len(scene.boxes), np.int64)), mask, None, confidence)
    header = Header(frame_id="base_footprint")
    cloud_bytes = ground_messages.cloud_message(header, projector.points).data

    def grid_output() -> object:
        values = occupancy(projector, grid, result.seg_mask, (ROAD, LANE), result.detections.boxes)
        return ground_messages.grid_message(header, grid, values)

    def lane_outputs() -> object:
        lines = lane_polylines(*lane_points(projector, result, LANE), lanes)
        return ground_messages.lane_markers(header, lines), ground_messages.lane_points_message(header, lines)

    def detections_output() -> object:
        det = result.detections
        contacts = ground_contacts(projector, det.boxes, contact_rows(det.boxes, result.seg_mask, (ROAD, LANE)))
        return ground_messages.detections_3d_message(header, contacts, det.scores, det.class_ids, ["car"],
                                                     pose.position)

    def cloud_output() -> object:
        width, height = size
        return ground_messages.PointCloud2(header=header, height=height, width=width,
                                           fields=ground_messages.XYZ_FIELDS, point_step=12, row_step=12 * width,
                                           data=cloud_bytes, is_dense=False)

    result = {
        "grid": _median_ms(grid_output, repeats),
        "lane polylines + points": _median_ms(lane_outputs, repeats),
        "detections_3d": _median_ms(detections_output, repeats),
        "organised cloud": _median_ms(cloud_output, repeats),
        "confidence image": _median_ms(confidence.image, repeats),
    }
    result["grid + lanes + detections_3d"] = (result["grid"] + result["lane polylines + points"]
                                              + result["detections_3d"])
    result["lookup build (once per camera and pose)"] = build_ms
    result["vehicles"] = float(len(scene.boxes))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT of the frames")
    parser.add_argument("--repeats", type=int, default=50, help="timed repetitions per output")
    parser.add_argument("--seed", type=int, default=3, help="synthetic scene")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.lower().split("x"))
    result = run((width, height), args.repeats, args.seed)
    print(f"ground outputs per {width}x{height} frame (median of {args.repeats}, "
          f"{int(result.pop('vehicles'))} vehicles, torch threads {torch.get_num_threads()}):")
    for name, ms in result.items():
        print(f"  {name:42s} {ms:8.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
