"""What the README promises about the outputs is what they carry (planners read the README)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from iggt_ros.messages import layouts as L
from iggt_ros.messages.message import Header
from iggt_ros.perception.records import STATE_CONFIRMED, STATE_LOST, STATE_TENTATIVE, InstanceRecord

README = Path(__file__).resolve().parents[1] / "README.md"


def _topic_row(topic: str) -> str:
    rows = [line for line in README.read_text().splitlines() if line.startswith(f"| `{topic}` |")]
    assert len(rows) == 1, f"README must describe {topic} in one row of the topics table"
    return rows[0]


def _record(iid: int, state: int) -> InstanceRecord:
    return InstanceRecord(id=iid, centroid=np.zeros(3), box_center=np.zeros(3), box_size=np.ones(3), state=state)


def test_detections_mirror_the_instances_that_are_not_lost_as_the_readme_says():
    row = _topic_row("/iggt/detections")
    assert re.search(r"not lost", row) and re.search(r"lost .*left out", row), row
    rows = [_record(1, STATE_CONFIRMED), _record(2, STATE_TENTATIVE), _record(3, STATE_LOST)]
    detections = L.detection3d_array(Header(5, "odom"), rows).fields["detections"]
    assert [d["id"] for d in detections] == ["1", "2"], "tentative and confirmed instances; the lost one is left out"
    instances = L.instance_array(Header(5, "odom"), rows).fields["instances"]
    assert [i["id"] for i in instances] == [1, 2, 3], "/iggt/instances keeps the lost one"
