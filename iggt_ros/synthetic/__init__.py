"""Synthetic indoor scenes with exact ground truth: procedural rooms and objects, rigs, trajectories, renderer.

Typical use: `make_sequence(seed, num_steps, cameras, trajectory, width, height)` gives rendered views
(RGB, metric depth, instance IDs, K, camera poses) plus the scene's objects and their attributes.
Only numpy is needed.
"""

from .render import RenderResult, SceneRenderer, render_view
from .rig import make_rig
from .scene import make_scene
from .sequence import SequencePlan, iter_steps, make_sequence, plan_sequence, stamp_ns
from .trajectory import TRAJECTORIES, make_trajectory
from .types import CameraRig, ObjectSpec, RenderedView, Scene, SyntheticSequence

__all__ = [
    "TRAJECTORIES",
    "CameraRig",
    "ObjectSpec",
    "RenderResult",
    "RenderedView",
    "Scene",
    "SceneRenderer",
    "SequencePlan",
    "SyntheticSequence",
    "iter_steps",
    "make_rig",
    "make_scene",
    "make_sequence",
    "make_trajectory",
    "plan_sequence",
    "render_view",
    "stamp_ns",
]
