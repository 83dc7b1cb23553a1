"""The decisions of `launch/iggt.launch.py`, free of the launch packages so they are tested anywhere.

The launch file only turns these answers into launch actions; what it configures, activates and
passes to the node process is decided here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CONFIGURE = "configure"
ACTIVATE = "activate"
LARGE_IMAGES_PROFILE = "fastdds_large_images.xml"
"""Fast DDS profile in the package's config directory (a 32 MiB shared-memory segment)."""
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
"""Fast DDS reads its default profile file from the first (Fast DDS 3) or the second (Fast DDS 2) variable."""


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


def fastdds_environment(large_images: bool, config_dir: str) -> dict[str, str]:
    """Environment of the node process for `large_images:=true`: the large-image Fast DDS profile.

    Empty when not asked for, so a profile the user exported stays in force. A missing profile
    file is an error naming it (an installation without the package's config directory).
    """
    if not large_images:
        return {}
    path = os.path.join(config_dir, LARGE_IMAGES_PROFILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"large_images:=true needs the Fast DDS profile '{path}', which is missing; "
                                "reinstall iggt_ros (colcon build installs config/)")
    return {name: path for name in PROFILE_VARIABLES}


THREAD_ARGUMENTS = {"torch_threads": "threads.torch", "pixel_threads": "threads.pixel"}
"""Launch arguments that override the config file's thread policy (empty = the file's value)."""


def thread_setup(config_file: str, arguments: dict[str, str],
                 environ: dict[str, str] | None = None) -> tuple[dict[str, object], dict[str, str]]:
    """Parameters and environment of the node process for the thread policy.

    The policy is the config file's `threads` section with the launch arguments over it. The libraries
    read it when they load, before the node reads its parameters, so it reaches them through the
    process environment; the same values go to the node as parameters so that what it logs and reports
    is what runs. A variable already set in the launching shell is left to win, as it would without launch.
    """
    from iggt_ros.config import load_config
    from iggt_ros.threads import environment

    overrides: dict[str, object] = {}
    for argument, key in THREAD_ARGUMENTS.items():
        text = arguments.get(argument, "").strip()
        if text:
            overrides[key] = _launch_int(argument, text)
    policy = load_config(config_file or None).replace(**overrides).threads
    environ = dict(os.environ) if environ is None else environ
    env = {name: value for name, value in environment(policy).items() if name not in environ}
    return overrides, env


def _launch_int(argument: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"launch argument {argument}:={text!r} must be an integer (0 = every CPU)") from None
