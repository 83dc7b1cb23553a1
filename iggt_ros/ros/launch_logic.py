"""The decisions of `launch/iggt.launch.py`, free of the launch packages so they are tested anywhere.

The launch file only turns these answers into launch actions; what it configures, activates and
passes to the node process is decided here.
"""

from __future__ import annotations

from dataclasses import dataclass

CONFIGURE = "configure"
ACTIVATE = "activate"


def parse_remaps(text: str) -> list[tuple[str, str]]:
    """'a=b, c=d' -> [('a', 'b'), ('c', 'd')]; a malformed entry is an error naming it."""
    pairs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        src, sep, dst = item.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise ValueError(f"camera_remaps entry '{item}' is not of the form FROM=TO")
        pairs.append((src.strip(), dst.strip()))
    return pairs


@dataclass
class Autostart:
    """`autostart:=true`: configure the node when it starts and activate it after that configure, once.

    Only the first configure of the node's life is followed by an activate. Whatever the user does
    later with `ros2 lifecycle` (cleanup, configure, activate) is left to the user: activating after
    every configure would take the user's own activate away ("Unknown transition requested"). A
    first configure that fails spends the autostart too; the user configures by hand after fixing it.
    """

    enabled: bool
    spent: bool = False

    def at_launch(self) -> list[str]:
        """Transitions to request once the node process has started."""
        return [CONFIGURE] if self.enabled else []

    def after_transition(self, start_state: str, goal_state: str) -> list[str]:
        """Transitions to request after the node went from `start_state` to `goal_state` (state labels)."""
        if not self.enabled or self.spent or start_state != "configuring":
            return []
        self.spent = True
        return [ACTIVATE] if goal_state == "inactive" else []
