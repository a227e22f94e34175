"""Training and evaluation for HybridNets (no ROS imports here)."""
