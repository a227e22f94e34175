"""The environment of ROS processes that keep DDS on this host, in a domain of their own."""
from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

# What a DDS participant of this process reads from the environment.
DDS_VARIABLES = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_STATIC_PEERS", "RMW_IMPLEMENTATION",
                 "FASTDDS_DEFAULT_PROFILES_FILE", "ROS_LOG_DIR", "HOME")


def ros_environment(base: Mapping[str, str] | None = None, domain_id: int | None = None) -> dict[str, str]:
    """An environment for ROS processes of this host only, in ``domain_id`` (default: derived from the pid)."""
    env = dict(os.environ if base is None else base)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    env.setdefault("ROS_LOG_DIR", str(Path(tempfile.gettempdir()) / "hybridnets_ros_log"))
    env["ROS_DOMAIN_ID"] = str(domain_id if domain_id is not None else env.get("ROS_DOMAIN_ID", 1 + os.getpid() % 100))
    return env


@contextmanager
def dds_environment(env: Mapping[str, str]) -> Iterator[None]:
    """Within the block, this process's DDS variables (``DDS_VARIABLES``) are those of ``env`` (unset if absent):
    create rclpy contexts and nodes inside it so they keep to the same host, transport profile and logs."""
    saved = {k: os.environ.get(k) for k in DDS_VARIABLES}
    try:
        for key in DDS_VARIABLES:
            if key in env:
                os.environ[key] = env[key]
            else:
                os.environ.pop(key, None)
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
