"""``python -m hybridnets_ros.demo``: the whole system on a synthetic drive, from a rosbag2 file to an overlay video.

Modules: ``drive`` (render the drive into the input bag), ``processes`` (child processes that are always stopped),
``monitor`` (an rclpy observer of the ROS graph), ``report`` (output bag -> video, PNGs, summary), ``run`` (the
sequence) and ``cli`` (arguments and the printed summary).
"""
