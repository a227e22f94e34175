"""An rclpy node in a context of its own, spun by a single-threaded executor on a background thread: the base of
every in-process observer of the node's graph (the test/benchmark probe, the demo's monitor)."""
from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Self

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from hybridnets_ros.testing.environment import dds_environment


class BackgroundNode:
    """Node ``node_name`` on the DDS domain and host of ``env`` (``ROS_DOMAIN_ID`` and the ``DDS_VARIABLES``).

    Spinning starts at once: a subclass sets up the state its callbacks use before calling this constructor and
    creates its subscriptions after. ``close`` (or the end of a ``with`` block) stops the thread and the context;
    this process's signal handlers stay untouched.
    """

    def __init__(self, env: Mapping[str, str], node_name: str, namespace: str = "") -> None:
        self.context = Context()
        with dds_environment(env):  # the DDS participant reads them when it is created
            rclpy.init(context=self.context, domain_id=int(env["ROS_DOMAIN_ID"]),
                       signal_handler_options=SignalHandlerOptions.NO)
            self.node = rclpy.create_node(node_name, context=self.context, namespace=namespace or None)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._spinner = threading.Thread(target=self._spin, name=node_name, daemon=True)
        self._spinner.start()

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except Exception:  # the context was shut down while spinning: the node is closing
            pass

    def close(self) -> None:
        self._executor.shutdown(timeout_sec=5.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._spinner.join(timeout=5.0)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
