"""Ground-plane geometry (no ROS): camera model from CameraInfo fields, camera pose, ray-to-ground lookup, and the
ground outputs built from it (occupancy grid, lane-line polylines, vehicle contact points)."""
