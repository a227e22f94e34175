"""The ROS 2 side: the ``hybridnets`` lifecycle node, its message conversions, frame slots and diagnostics."""
