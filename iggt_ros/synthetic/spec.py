"""The one description of a synthetic sequence, whatever it is rendered for.

Sample bags (`bag.sample.SampleBagSpec` adds what only a bag has), the held-out benchmark and
validation scenarios (`train.evaluate.Scenario` names one) and the demo all describe their scene with
this, so a benchmark sequence, a bag and the demo's input are the same scene when their specs are.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .sequence import SequencePlan, make_sequence, plan_sequence
from .style import SceneStyle, sample_style
from .types import SyntheticSequence

STYLE_STREAM = 7
"""Sub-stream of a scene's seed that draws its randomised look."""


@dataclass(frozen=True)
class SceneSpec:
    """Scene seed, rig, motion and look of one synthetic sequence."""

    seed: int = 0
    cameras: int = 1
    frames: int = 60
    """Time steps (one image per camera each)."""
    trajectory: str = "orbit"
    width: int = 504
    height: int = 336
    rate_hz: float = 10.0
    num_objects: int | None = None
    """Objects in the scene; None draws 5-30 from the seed."""
    room: str = "room"
    """'room', 'hall' or 'corridor'."""
    coverage: float = 1.0
    """Fraction of the trajectory's full loop or sweep the sequence spans."""
    domain: str | None = None
    """Randomised look drawn from this factor pool ('train', 'foreign'); None: the default look."""
    duplicate_pairs: int | None = None
    """With a randomised look: identical objects placed side by side in pairs (None: the look's own draw)."""

    def style(self) -> SceneStyle | None:
        if self.domain is None:
            return None
        drawn = sample_style(self.domain, np.random.default_rng([self.seed, STYLE_STREAM]))
        return replace(drawn, duplicate_pairs=self.duplicate_pairs)

    def plan(self) -> SequencePlan:
        """Scene, rig, poses and stamps without rendering (a bag renders step by step)."""
        return plan_sequence(self.seed, num_steps=self.frames, cameras=self.cameras, trajectory=self.trajectory,
                             width=self.width, height=self.height, rate_hz=self.rate_hz,
                             num_objects=self.num_objects, coverage=self.coverage, room=self.room,
                             style=self.style())

    def make(self) -> SyntheticSequence:
        """The rendered sequence."""
        return make_sequence(self.seed, num_steps=self.frames, cameras=self.cameras, trajectory=self.trajectory,
                             width=self.width, height=self.height, rate_hz=self.rate_hz,
                             num_objects=self.num_objects, coverage=self.coverage, room=self.room,
                             style=self.style())
