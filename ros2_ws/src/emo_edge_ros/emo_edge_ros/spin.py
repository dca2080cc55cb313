"""The one way our ROS 2 processes run a node: init, spin until Ctrl-C or shutdown, then close cleanly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException


def spin_node(make: Callable[[], Any], args: list[str] | None = None,
              start: Callable[[Any], None] | None = None) -> None:
    """rclpy.init, node = make(), start(node), spin; on the way out node.close(), destroy, shutdown."""
    rclpy.init(args=args)
    node = None
    try:
        node = make()
        if start is not None:
            start(node)
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
