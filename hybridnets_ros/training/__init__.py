"""Training, evaluation and synthetic data for HybridNets (no ROS imports here)."""
