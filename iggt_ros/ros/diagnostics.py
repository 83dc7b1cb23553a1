"""/diagnostics messages of the node: one DiagnosticStatus per report ("perception", "TF")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from iggt_ros.ros.runtime_stats import ERROR, WARN, DiagnosticsReport


def diagnostic_array(node_name: str, hardware_id: str, reports: Mapping[str, DiagnosticsReport], stamp: Any) -> Any:
    """diagnostic_msgs/DiagnosticArray with the reports in order, stamped `stamp` (a builtin_interfaces Time)."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    levels = {WARN: DiagnosticStatus.WARN, ERROR: DiagnosticStatus.ERROR}
    statuses = [DiagnosticStatus(level=levels.get(report.level, DiagnosticStatus.OK), name=f"{node_name}: {name}",
                                 message=report.message, hardware_id=hardware_id,
                                 values=[KeyValue(key=k, value=v) for k, v in report.values.items()])
                for name, report in reports.items()]
    msg = DiagnosticArray(status=statuses)
    msg.header.stamp = stamp
    return msg
