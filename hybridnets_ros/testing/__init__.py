"""The harness that drives the installed node from outside, as tests, benchmarks and the demo do: a ROS environment
kept on this host (``environment``), child processes stopped by PID (``processes``), the node's executable with its
parameters (``node_process``), an rclpy node spun in a background thread (``background_node``) and the probe built
on it that feeds the node and records its outputs (``probe``), plus synthetic frames with unique headers (``frames``)
and small random checkpoints (``checkpoints``)."""
