"""The bad-input rules the node and the replay share: which camera messages are used, which are dropped.

A robot's drivers glitch: an image stamped 0, a stamp repeated or far off for one message, a
black frame from a covered lens, a 0x0 image, a NaN in a pose or a calibration. Each such message
is dropped on its own (nothing else is lost, nothing is reset) with one message that names the
topic, the stamp and what to do, and is counted (`InputCounts`, shown on /diagnostics by the node
and in `ReplaySummary.skipped` by the replay). Both adapters apply these rules before anything
reaches the perception core, so a bag replays exactly as the node would have run it.

Stamps (`StampGuard`, one stream per camera topic, or per synchronised set):

* stamp 0 (or negative): the driver's clock was not set; dropped;
* the same stamp as the previous message: a duplicate; dropped;
* a stamp that goes backwards, or forward by more than `FAR_JUMP_S`: held for one message. If the
  next message continues from the held stamp, time really jumped (a looped bag, a restarted clock):
  both are passed on and the core starts over, as for any loop; if it continues the old sequence,
  the held message was a glitch and is dropped without any reset.

A message dropped for its stamp still stood for one capture of its camera, and the other cameras'
images of that moment must not be lost with it: the synchroniser would wait for it forever. When the
next message of the stream shows where the lost captures belonged (its stamp is as many camera periods
after the last one used as captures were lost, the period being the stream's previous interval),
`Admitted.missing_ns` gives their stamps, so the adapters can tell the synchroniser that this camera
is missing at those times (`perception.frames.MissingFrame`). Where the stamps do not show it (a
repeated message, an irregular stream, the first messages), nothing is guessed.

Images (`image_problem`): no pixels, one grey level over the whole frame (black, white or constant:
a covered lens, a saturated sensor, a dead driver) are dropped, since no geometry can come from them;
an image far larger than the model input is used (it is resized) and said once, since it costs time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

NS_PER_S = 1_000_000_000
FAR_JUMP_S = 10.0
"""A stamp this far ahead of the previous one is held until the next message confirms or refutes it."""
CONSTANT_RANGE = 4
"""Grey levels (of 255) spanned by a coarse thumbnail below which an image carries no structure."""
BLACK_MEAN, WHITE_MEAN = 16.0, 239.0
"""Mean grey level of a constant image below which it is called black, above which saturated."""
LARGE_IMAGE_FACTOR = 16.0
"""An image with this many times the model input's pixels is said to be far larger than needed."""

T = TypeVar("T")


def seconds(stamp_ns: int) -> str:
    return f"{stamp_ns / NS_PER_S:.3f} s"


@dataclass(frozen=True)
class InputProblem:
    """One bad input message: what it is (`kind`, the counter's name), where, and the sentence to log."""

    kind: str
    topic: str
    stamp_ns: int
    text: str
    dropped: bool = True
    """False for a message that is used anyway (a warning only)."""


def problem(kind: str, topic: str, stamp_ns: int, what: str, todo: str, dropped: bool = True) -> InputProblem:
    """An `InputProblem` whose text follows the one format: topic, stamp, what happened, what to do."""
    fate = "dropped" if dropped else "used"
    return InputProblem(kind, topic, int(stamp_ns), f"{topic} at {seconds(stamp_ns)}: {what}; message {fate}. {todo}",
                        dropped)


# ------------------------------------------------------------------------------------------ stamps
@dataclass
class Admitted(Generic[T]):
    """What one message did to a stamp stream."""

    items: list[T] = field(default_factory=list)
    """Messages to use now, in order (a held message first when the next one confirmed its jump)."""
    problems: list[InputProblem] = field(default_factory=list)
    """Messages dropped by this call (this one, or a held one shown to be a glitch)."""
    jump_from_ns: int | None = None
    """Set when time really jumped backwards (a loop or a restart): the stamp it came from."""
    jump_to_ns: int | None = None
    missing_ns: list[int] = field(default_factory=list)
    """Where captures dropped for their stamps belonged, oldest first: before `items`, the stream has no
    image at these times (for the synchroniser, so the other cameras' images there are still used)."""


@dataclass
class _Stream(Generic[T]):
    last: int | None = None
    held: tuple[int, T] | None = None
    period: int | None = None
    """The interval between the last two messages used (a camera's frame period)."""
    lost: int = 0
    """Messages dropped for their stamps since the last one used."""


class StampGuard(Generic[T]):
    """The stamp rule of one or more streams (keyed by topic); not thread-safe, one caller per stream."""

    def __init__(self, far_jump_s: float = FAR_JUMP_S) -> None:
        self.far_jump_ns = int(far_jump_s * NS_PER_S)
        self._streams: dict[str, _Stream[T]] = {}

    def holding(self) -> bool:
        """True while a message waits for the next one to say whether its jump was real."""
        return any(s.held is not None for s in self._streams.values())

    def admit(self, topic: str, stamp_ns: int, item: T) -> Admitted[T]:
        stream = self._streams.setdefault(topic, _Stream())
        stamp = int(stamp_ns)
        out: Admitted[T] = Admitted()
        if stamp <= 0:
            out.problems.append(problem("zero stamp", topic, stamp, "header stamp is 0 (the publisher's clock was "
                                        "not set)", "Check the camera driver's time source (use_sim_time, clock)"))
            stream.lost += 1
            return out
        if stream.held is not None:
            held_stamp, held_item = stream.held
            stream.held = None
            last = stream.last
            if self._continues(held_stamp, last, stamp):
                out.items = [held_item]
                stream.last, stream.period, stream.lost = held_stamp, None, 0  # a new sequence: no period yet
                if last is not None and held_stamp < last:
                    out.jump_from_ns, out.jump_to_ns = last, held_stamp
            else:
                out.problems.append(self._glitch(topic, held_stamp, last))
                stream.lost += 1
        last = stream.last
        if last is not None and stamp == last:
            out.problems.append(problem("duplicate stamp", topic, stamp, "the same header stamp as the previous "
                                        "message", "Check that the driver stamps each image with its own capture "
                                        "time"))
            stream.lost += 1
            return out
        if last is not None and (stamp < last or stamp - last > self.far_jump_ns):
            stream.held = (stamp, item)
            return out
        if last is not None:
            out.missing_ns = self._missing(stream, last, stamp)
            stream.period = stamp - last
        stream.last, stream.lost = stamp, 0
        out.items.append(item)
        return out

    @staticmethod
    def _missing(stream: _Stream[T], last: int, stamp: int) -> list[int]:
        """Stamps of the captures lost between `last` and `stamp`, where the stream's period places them."""
        lost, period = stream.lost, stream.period
        if not lost or not period or round((stamp - last) / period) != lost + 1:
            return []
        return [last + (stamp - last) * i // (lost + 1) for i in range(1, lost + 1)]

    def flush(self, topic: str | None = None) -> list[InputProblem]:
        """Held messages that no later message confirmed (end of a bag): dropped as glitches."""
        problems = []
        for name, stream in self._streams.items():
            if stream.held is not None and (topic is None or name == topic):
                problems.append(self._glitch(name, stream.held[0], stream.last))
                stream.held = None
                stream.lost += 1
        return problems

    def forget(self) -> None:
        """Start every stream afresh (the adapter was reset)."""
        self._streams.clear()

    def _continues(self, held: int, last: int | None, stamp: int) -> bool:
        """Does `stamp` continue from the held stamp rather than from the last one used?"""
        if stamp <= held or stamp - held > self.far_jump_ns:
            return False
        if last is not None and held < last:  # back in time: a new sequence stays below where the old one was
            return stamp < last
        return True

    @staticmethod
    def _glitch(topic: str, stamp: int, last: int | None) -> InputProblem:
        where = "" if last is None else (f" (previous {seconds(last)}, "
                                         f"{'back' if stamp < last else 'forward'} {seconds(abs(stamp - last))})")
        return problem("stamp jump", topic, stamp, f"a single stamp out of sequence{where}, and the next message "
                       "went on from the previous one, so this was a glitch, not a loop: nothing was reset",
                       "Check the camera driver's time stamps")


# ------------------------------------------------------------------------------------------ images
def image_problem(topic: str, stamp_ns: int, rgb: np.ndarray, model_hw: tuple[int, int]) -> InputProblem | None:
    """Why a decoded [H,W,3] image cannot be used (or, `dropped` False, is used with a warning); None if fine."""
    shape = np.shape(rgb)
    if len(shape) != 3 or shape[0] == 0 or shape[1] == 0:
        size = f"{shape[1]}x{shape[0]}" if len(shape) >= 2 else str(shape)
        return problem("empty image", topic, stamp_ns, f"the image is {size}: it has no pixels",
                       "Check the camera driver's image size settings")
    h, w = int(shape[0]), int(shape[1])
    step = max(1, min(h, w) // 64)
    thumb = np.asarray(rgb)[::step, ::step]
    grey = thumb.mean(axis=-1) if thumb.ndim == 3 else thumb
    lo, hi = float(grey.min()), float(grey.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return problem("non-finite image", topic, stamp_ns, "the image holds non-finite values",
                       "Check the camera driver's output encoding")
    if hi - lo <= CONSTANT_RANGE:
        mean = float(grey.mean())
        kind, what = (("black image", "the image is black") if mean < BLACK_MEAN else
                      ("saturated image", "the image is saturated (all white)") if mean > WHITE_MEAN else
                      ("constant image", f"the image is one flat grey level ({mean:.0f})"))
        return problem(kind, topic, stamp_ns, f"{what}, so it carries no geometry",
                       "Check the lens cap, the exposure settings and the lighting")
    mh, mw = model_hw
    if h * w > LARGE_IMAGE_FACTOR * mh * mw:
        return problem("large image", topic, stamp_ns, f"the image is {w}x{h}, {h * w / (mh * mw):.0f} times the "
                       f"model input {mw}x{mh}; it is resized every time, which costs CPU",
                       "Publish a smaller image (the camera driver's resolution, or image_proc's resize)",
                       dropped=False)
    return None


def pose_problem(topic: str, stamp_ns: int, frame_id: str, pose: np.ndarray | None) -> InputProblem | None:
    """A pose that TF gave but that cannot be used: non-finite values (the frame is used without a pose)."""
    if pose is None or np.all(np.isfinite(pose)):
        return None
    return problem("non-finite pose", topic, stamp_ns, f"the TF pose of frame '{frame_id}' has non-finite values",
                   "Check the node publishing that transform (/tf or /tf_static); the image is used without a pose",
                   dropped=False)


# ------------------------------------------------------------------------------------------ counts
class InputCounts:
    """Bad inputs by kind, for /diagnostics and the replay summary; thread-safe.

    `record` logs each problem's text the first time its (kind, topic) is seen and counts every one,
    so a camera that sends only black frames is said once, not thirty times a second.
    """

    def __init__(self, log: Callable[[str], object]) -> None:
        self._log = log
        self._lock = threading.Lock()
        self.total: dict[str, int] = {}
        self._period: dict[str, int] = {}
        self._said: set[tuple[str, str]] = set()
        self.last = ""

    def record(self, item: InputProblem) -> None:
        key = (item.kind, item.topic)
        with self._lock:
            self.total[item.kind] = self.total.get(item.kind, 0) + 1
            self._period[item.kind] = self._period.get(item.kind, 0) + 1
            self.last = item.text
            fresh = key not in self._said
            self._said.add(key)
        if fresh:
            self._log(item.text + " (said once per topic; every one is counted)")

    def take_period(self) -> dict[str, int]:
        """Counts since the previous call (a diagnostics period)."""
        with self._lock:
            period, self._period = self._period, {}
        return period
