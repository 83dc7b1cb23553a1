"""The package's Python log records (pipeline warnings) on the node's ROS logger."""

from __future__ import annotations

import logging
from typing import Any


class ForwardToRosLog(logging.Handler):
    """Sends records of the `iggt_ros` loggers to a ROS logger, so they reach /rosout with the node's name."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__(logging.INFO)
        self._ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"[{record.name}] {record.getMessage()}"
            if record.levelno >= logging.ERROR:
                self._ros_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self._ros_logger.warning(text)
            else:
                self._ros_logger.info(text)
        except Exception:  # logging must never break the caller
            self.handleError(record)
