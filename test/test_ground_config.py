"""Configuration around the ground-plane outputs: the rviz2 layout shows them in the node's default ground frame."""
from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_rviz_layout_shows_the_ground_outputs_in_the_ground_frame() -> None:
    layout = yaml.safe_load((REPO / "config" / "hybridnets.rviz").read_text())["Visualization Manager"]
    params = yaml.safe_load((REPO / "config" / "hybridnets.yaml").read_text())["/**"]["ros__parameters"]
    assert layout["Global Options"]["Fixed Frame"] == params["ground_frame"]
    shown = {d["Topic"]["Value"]: d["Class"] for d in layout["Displays"]}
    assert shown["camera/drivable_area/grid"] == "rviz_default_plugins/Map"
    assert shown["camera/lane_lines/polylines"] == "rviz_default_plugins/MarkerArray"
    assert shown["camera/ground/points"] == "rviz_default_plugins/PointCloud2"
