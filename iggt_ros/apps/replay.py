"""`iggt-ros replay`: run the perception pipeline over a rosbag2 and record what the node would publish.

`replay_bag(...)` (or `Replay(...).run()`) reads a camera bag (sqlite3 or mcap) with `BagReader`,
feeds its frames through the same synchroniser and `Pipeline` the node uses, and writes an output
bag (mcap by default) holding:

* every output topic of `iggt_ros.messages.outputs` (points, instances, detections, markers, per-view
  instance and depth images), recorded at the bag time of the frame that completed the window,
  i.e. when the node would have published it;
* the input images as decoded rgb8 on `/<camera>/image_raw` with their `/<camera>/camera_info`
  (pinhole K as read; distortion is not carried), `/tf` holding the camera poses the replay
  used (world frame -> each optical frame at each image stamp), and the input's `/tf_static`
  (latched; the camera mounts), so every output can be placed in RViz or Foxglove from the output
  bag alone.

When the bag carries ground truth (`iggt_ros.bag.sample` convention) it also writes an evaluation
report (accumulated by `iggt_ros.eval.record`, rendered by `iggt_ros.eval.report`): each output
view is counted once, with the prediction it was published with (the first window that holds the
view: the prediction a robot would have acted on); predicted ID and depth images are compared with
`/gt/<camera>/instances` and `/gt/<camera>/depth` after a nearest-neighbour resize to the ground
truth's size (depth twice: each view rescaled to the truth, and as published), and camera
positions with the TF truth. Finally the last map snapshot is saved as
`<output bag>/query_state.{json,npz}` for `iggt-ros query`.

Engines: torch, onnxruntime and tensorrt come from `iggt_ros.engine.factory.create_engine`; the
`oracle` engine is built from the bag's own ground truth (true depth, instance masks and TF poses
of each view, kept in bounded memory by `TruthStore`).

Bad input gives a clear message and never a half-written bag: a bag that cannot be used at all (no
camera topics, unreadable, an engine that cannot be created) raises `ReplayError` before anything
is written; problems inside the bag (unsupported encodings, missing camera_info, cameras of
different sizes, time jumping back in a looped bag, a bag cut short, and every bad message of the
core's rules, `perception.input_checks`: zero, repeated or glitched stamps, empty, black or
saturated images, non-finite TF or calibration) are warned about, collected in
`ReplaySummary.warnings` (and counted in `ReplaySummary.skipped`), and the replay goes on with what it
can use: only the bad message is lost. An error while processing
stops the replay, and what was produced until then is still written: the output bag is closed
properly and the report and query state are written.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from iggt_ros.apps.replay_query import QueryStateRecorder
from iggt_ros.apps.replay_truth import TruthStore
from iggt_ros.bag.reader import (
    BagError,
    BagReader,
    CameraImage,
    GroundTruthImage,
    GroundTruthObjects,
    MissingImage,
    StaticTransforms,
    TimeJump,
)
from iggt_ros.bag.writer import STORAGES, BagWriter
from iggt_ros.config import ENGINE_BACKENDS, MAX_VIEWS, ConfigError, IggtConfig, load_config
from iggt_ros.engine.base import Engine, EngineError, ViewKey
from iggt_ros.eval.record import RunRecord
from iggt_ros.eval.report import ReportFiles, write_report
from iggt_ros.messages import convention as C
from iggt_ros.messages import layouts as L
from iggt_ros.messages.message import Header
from iggt_ros.messages.outputs import OutputAdapter
from iggt_ros.perception.engine_setup import create_window_engine
from iggt_ros.perception.pipeline import Collected, Pipeline, WindowResult
from iggt_ros.perception.warn_once import WarnOnce
from iggt_ros.process_age import process_age_s

log = logging.getLogger(__name__)

QUERY_STATE_STEM = "query_state"


class ReplayError(RuntimeError):
    """The replay cannot start (bag unusable, engine unavailable); the message says what to do."""


@dataclass
class ReplaySummary:
    """What a replay read, produced and wrote."""

    input_bag: Path
    output_bag: Path
    engine: str
    oracle: bool
    cameras: list[str]
    images_read: int = 0
    framesets: int = 0
    windows: int = 0
    views: int = 0
    """Output views (each camera image that reached an output once)."""
    output_counts: dict[str, int] = field(default_factory=dict)
    """Messages per topic in the output bag."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Input messages the reader skipped, by reason (the bad-input rules of `perception.input_checks`)."""
    flagged: dict[str, int] = field(default_factory=dict)
    """Input messages used with a warning, by reason (an image far larger than the model input, a NaN pose)."""
    warnings: list[str] = field(default_factory=list)
    truncated: bool = False
    time_jumps: int = 0
    reexpressions: int = 0
    """Times the map moved from input.fallback_frame to input.world_frame (TF arrived after the first windows)."""
    tf_dropout_windows: int = 0
    """Windows without TF for every camera after the output was in the world frame (they stayed in it)."""
    stopped: str = ""
    """Why the replay stopped before the end of the bag ('' when it read the whole bag)."""
    report: ReportFiles | None = None
    query_state: Path | None = None
    wall_s: float = 0.0
    first_window_s: float | None = None
    """Seconds from the start of the replay (opening the bag, loading the engine) to the first window's outputs."""
    process_age_at_first_window_s: float | None = None
    """Cold start of a fresh process (`iggt-ros replay`, `demo`): seconds from the process start (imports
    included) to the first window's outputs; in a long-lived process it is that process's age."""

    @property
    def metrics(self) -> dict[str, Any] | None:
        return None if self.report is None else self.report.metrics

    def headline(self) -> list[str]:
        """The few numbers worth printing: windows, latency and, with ground truth, the metrics."""
        lines = [f"{self.images_read} images, {self.framesets} synchronised sets, {self.windows} windows, "
                 f"{self.views} output views in {self.wall_s:.1f} s (engine: {self.engine})"]
        if self.first_window_s is not None:
            lines.append(f"first window {self.first_window_s:.1f} s after the replay started "
                         f"({self.process_age_at_first_window_s:.1f} s after the process started)")
        if self.reexpressions or self.tf_dropout_windows:
            lines.append(f"TF: map moved into the TF world frame {self.reexpressions} time(s) (TF came after the "
                         f"first windows); {self.tf_dropout_windows} window(s) without TF stayed in it")
        m = self.metrics
        if not m:
            return lines
        total = (m.get("latency_ms") or {}).get("total")
        if total and total.get("count"):
            lines.append(f"latency per window: mean {total['mean']:.0f} ms, p95 {total['p95']:.0f} ms")
        inst = m.get("instances")
        if inst:
            lines.append(f"T-mIoU {_pct(inst.get('t_miou'))}, T-SR {_pct(inst.get('t_sr'))} "
                         f"({inst.get('num_objects')} true objects, {inst.get('num_pred_ids')} predicted IDs)")
        depth = m.get("depth")
        if depth:
            lines.append(f"depth Abs.Rel {_num(depth.get('abs_rel'))}, inliers {_pct(depth.get('inlier_ratio'))} "
                         "(each view rescaled)")
        published = m.get("depth_published")
        if published:
            lines.append(f"depth as published: Abs.Rel {_num(published.get('abs_rel'))}, inliers "
                         f"{_pct(published.get('inlier_ratio'))}, published / true {_num(published.get('ratio'))} "
                         f"(metric in {m.get('num_metric_windows', 0)} of {m.get('num_windows', 0)} windows)")
        pose = m.get("pose")
        if pose:
            lines.append(f"camera ATE RMSE {_num(pose.get('ate_rmse'))} m over {pose.get('num_poses')} poses")
        seg = m.get("segmentation")
        if seg:
            lines.append(f"semantic segmentation ({', '.join(seg['classes'])}): 2D mIoU {_pct(seg.get('miou_2d'))}, "
                         f"2D mAcc {_pct(seg.get('macc_2d'))}, 3D mIoU {_pct(seg.get('miou_3d'))}")
        return lines


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def bag_message_count(path: Path, topics: Sequence[str]) -> int | None:
    """Messages on `topics` according to metadata.yaml (for the progress bar); None when unknown."""
    meta = (path if path.is_dir() else path.parent) / "metadata.yaml"
    try:
        info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
        counts = {t["topic_metadata"]["name"]: int(t["message_count"]) for t in info["topics_with_message_count"]}
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return None
    return sum(counts.get(t, 0) for t in topics) or None


def default_report_dir(output_bag: Path) -> Path:
    """Where a replay writes its report when none is given: next to the output bag."""
    return output_bag.parent / f"{output_bag.name}_report"


class Replay:
    """One replay of one bag; `run()` does the work and returns a `ReplaySummary`.

    Args:
        input_bag: rosbag2 directory (sqlite3 or mcap) or .mcap file.
        output_bag: rosbag2 directory to create.
        config: the node's configuration (defaults when None). `input.cameras` is set from the bag
            when its cameras are not all in the bag, or from `cameras`.
        engine: a ready engine; None creates the one `config.engine` names ('oracle' from the bag).
        rate: replay at this multiple of bag time (sleeping); None: as fast as possible.
        report_dir: where to write the report; None: `default_report_dir` when the bag has ground
            truth, no report otherwise.
        cameras: camera names to read; None: the configured ones if the bag has them all, else all.
        storage: output storage, 'mcap' or 'sqlite3'.
        progress: show a progress bar (stderr).
        save_query_state: save the final map for `iggt-ros query` into the output bag directory.
        embed: embed instances for queries while replaying (needs the configured region encoder).
        notes: lines added to the report's notes.
    """

    def __init__(self, input_bag: str | Path, output_bag: str | Path, config: IggtConfig | None = None,
                 engine: Engine | None = None, *, rate: float | None = None, report_dir: str | Path | None = None,
                 cameras: Sequence[str] | None = None, storage: str = "mcap", progress: bool = False,
                 save_query_state: bool = True, embed: bool = True, notes: Sequence[str] = ()) -> None:
        if rate is not None and rate <= 0:
            raise ReplayError(f"--rate must be > 0 (got {rate}); leave it out (or --fast) to replay as fast as "
                              "possible")
        if storage not in STORAGES:
            raise ReplayError(f"unknown output storage '{storage}'; choose from {', '.join(STORAGES)}")
        self.input_bag = Path(input_bag)
        self.output_bag = Path(output_bag)
        self.config = config if config is not None else IggtConfig().validate()
        self.engine = engine
        self.rate = rate
        self.report_dir = None if report_dir is None else Path(report_dir)
        self.cameras = list(cameras) if cameras else None
        self.storage = storage
        self.progress = progress
        self.save_query_state = save_query_state
        self.embed = embed
        self.notes = list(notes)

    # ------------------------------------------------------------------ set-up
    def _open_reader(self) -> BagReader:
        if self.output_bag.exists():
            raise ReplayError(f"output {self.output_bag} already exists; remove it or choose another path")
        try:
            return BagReader(self.input_bag, cameras=self.cameras, world_frame=self.config.input.world_frame,
                             model_hw=(self.config.input.image_height, self.config.input.image_width))
        except BagError as exc:
            raise ReplayError(str(exc)) from exc
        except Exception as exc:  # a file that is not a bag at all
            raise ReplayError(f"cannot read bag {self.input_bag}: {type(exc).__name__}: {exc}") from exc

    def _configure(self, reader: BagReader) -> IggtConfig:
        cams = reader.cameras
        configured = self.config.input.cameras
        if self.cameras is None and all(c in cams for c in configured):
            cams = list(configured)
        elif self.cameras is None and configured != cams:
            log.info("input.cameras %s are not all in the bag; replaying its cameras %s", configured, cams)
        compressed = [c for c in self.config.input.compressed_cameras if c in cams]
        try:
            changes: dict = {"input.cameras": list(cams), "input.compressed_cameras": compressed}
            size = min(self.config.window.size, max(1, MAX_VIEWS // len(cams)))
            if size != self.config.window.size:
                log.warning("window.size %d x %d cameras exceeds %d images per window; replaying with "
                            "window.size %d", self.config.window.size, len(cams), MAX_VIEWS, size)
                changes.update({"window.size": size, "window.stride": min(self.config.window.stride, size)})
            return self.config.replace(**changes)
        except ConfigError as exc:
            raise ReplayError(f"configuration does not fit the bag: {exc}") from exc

    def _make_engine(self, config: IggtConfig, reader: BagReader, truth: TruthStore) -> Engine:
        if self.engine is not None:
            return self.engine
        h, w = config.input.image_height, config.input.image_width
        if config.engine.backend == "oracle":
            kinds = {kind for _, kind in reader.ground_truth_topics.values()}
            if not {"instances", "depth"} <= kinds:
                raise ReplayError(f"the oracle engine answers from ground truth, but bag {self.input_bag} has no "
                                  "/gt/<camera>/instances and /gt/<camera>/depth topics (see iggt-ros "
                                  "make-sample-bag for the convention); choose --engine torch|onnxruntime|tensorrt")
            from iggt_ros.engine.oracle import OracleEngine

            return OracleEngine(truth.rendered_view, input_size=(h, w))
        try:
            return create_window_engine(config)
        except ImportError as exc:
            raise ReplayError(f"engine backend '{config.engine.backend}' is not available in this installation "
                              f"({exc})") from exc
        except EngineError as exc:
            raise ReplayError(f"cannot create the {config.engine.backend} engine: {exc}") from exc

    # ------------------------------------------------------------------ run
    def run(self) -> ReplaySummary:
        started = time.monotonic()
        reader = self._open_reader()
        try:
            config = self._configure(reader)
            truth = TruthStore(config.window.size, len(config.input.cameras), config.input.sync_queue_size)
            engine = self._make_engine(config, reader, truth)
            state = _RunState(self, reader, config, truth, engine, started)
            state.execute()
        finally:
            reader.close()
        summary = state.summary
        summary.wall_s = time.monotonic() - started
        return summary


class _RunState:
    """Everything of one run that changes while it runs (kept apart from the options)."""

    def __init__(self, replay: Replay, reader: BagReader, config: IggtConfig, truth: TruthStore,
                 engine: Engine, replay_started: float) -> None:
        self.replay = replay
        self.replay_started = replay_started
        """time.monotonic() when the replay started (the first window's delay counts from it)"""
        self.reader = reader
        self.config = config
        self.truth = truth
        self.engine = engine
        self.pipeline = Pipeline(config, engine)
        self.adapter = OutputAdapter(config.publish)
        is_oracle = engine.name == "oracle"
        self.record = RunRecord(engine.name, is_oracle=is_oracle, notes=list(replay.notes),
                                segmentation_classes=tuple(config.query.label_vocabulary))
        self.query = QueryStateRecorder(config.query, embed=replay.embed and replay.save_query_state,
                                        on_label=self._on_label)
        self.summary = ReplaySummary(replay.input_bag, replay.output_bag, engine.name, is_oracle,
                                     list(config.input.cameras))
        self.source_sizes: dict[str, tuple[int, int]] = {}
        self.writer: BagWriter | None = None
        self._pending: list[CameraImage | MissingImage] = []
        self._wall_start: float | None = None
        self._bag_start: int | None = None
        self._warn_once = WarnOnce(self._collect_warning)

    # ------------------------------------------------------------------ helpers
    def _on_label(self, instance_id: int, label: str, score: float) -> None:
        """A label from the query index: into the map (published with the next window) and the segmentation scores."""
        self.pipeline.set_label(instance_id, label, score)
        if self.record.segmentation is not None:
            self.record.segmentation.set_label(instance_id, label)

    def warn(self, key: tuple[str, ...], text: str) -> None:
        """Said once per key: logged and collected in the summary."""
        self._warn_once("\x1f".join(key), text)

    def _collect_warning(self, text: str) -> None:
        self.summary.warnings.append(text)
        log.warning(text)

    def _write(self, topic: str, record_ns: int, data: L.MessageData) -> None:
        writer = self.writer
        if topic not in writer.counts:
            writer.add_topic(topic, data.typename, latched=topic == C.TF_STATIC_TOPIC)
        writer.write(topic, record_ns, data)

    def _write_static(self, event: StaticTransforms) -> None:
        """The input's camera mounts, copied: a viewer places the optical frames of the outputs from the bag alone."""
        self._write(C.TF_STATIC_TOPIC, event.record_ns, L.tf_message(
            [L.TransformData(parent, child, stamp, matrix) for parent, child, stamp, matrix in event.transforms]))

    def _events(self) -> Iterator[Any]:
        if not self.replay.progress:
            yield from self.reader
            return
        from tqdm import tqdm

        topics = [C.image_topic(c) for c in self.config.input.cameras] + [
            C.compressed_topic(c) for c in self.config.input.cameras]
        total = bag_message_count(self.replay.input_bag, topics)
        with tqdm(total=total, unit="img", desc="replay", dynamic_ncols=True, file=sys.stderr) as bar:
            for event in self.reader:
                if isinstance(event, CameraImage):
                    bar.update(1)
                    bar.set_postfix(windows=self.summary.windows, refresh=False)
                yield event

    # ------------------------------------------------------------------ main loop
    def execute(self) -> None:
        replay = self.replay
        self.writer = BagWriter(replay.output_bag, replay.storage)
        self.writer.__enter__()
        try:
            try:
                for event in self._events():
                    if isinstance(event, CameraImage | MissingImage):
                        if self._pending and event.record_ns != self._pending[0].record_ns:
                            self._flush()
                        self._pending.append(event)
                    elif isinstance(event, GroundTruthImage):
                        self.truth.add_ground_truth(event)
                    elif isinstance(event, GroundTruthObjects) and self.record.segmentation is not None:
                        self.record.segmentation.set_true_objects({i.id: i.label for i in event.instances})
                    elif isinstance(event, TimeJump):
                        self._flush()
                        self._time_jump(event)
                    elif isinstance(event, StaticTransforms):
                        if self._pending and event.record_ns != self._pending[0].record_ns:
                            self._flush()
                        self._write_static(event)
                self._flush()
            except KeyboardInterrupt:
                self.summary.stopped = "interrupted"
                log.warning("replay interrupted: writing what was produced so far")
            except Exception as exc:  # keep what was produced: close the bag, write report and state
                self.summary.stopped = f"{type(exc).__name__}: {exc}"
                log.exception("replay stopped by an error; writing what was produced so far")
        finally:
            self.writer.__exit__(None, None, None)
            self._finish()

    def _time_jump(self, jump: TimeJump) -> None:
        self.summary.time_jumps += 1
        self.warn(("time-jump", str(self.summary.time_jumps)),
                  f"time went backwards on {jump.topic} from {jump.from_ns / 1e9:.3f} s to {jump.to_ns / 1e9:.3f} s "
                  "(looped bag?): the pipeline starts over (new instance IDs, map and world frame)")
        self.truth.clear()  # the pipeline resets itself when the next frame set goes back in time, as on the node

    def _pace(self, record_ns: int) -> None:
        if self.replay.rate is None:
            return
        now = time.monotonic()
        if self._wall_start is None:
            self._wall_start, self._bag_start = now, record_ns
            return
        due = self._wall_start + (record_ns - self._bag_start) / 1e9 / self.replay.rate
        if due > now:
            time.sleep(due - now)

    def _flush(self) -> None:
        """Feed the images of one record time (their ground truth has been read by now)."""
        pending, self._pending = self._pending, []
        for image in pending:
            self._pace(image.record_ns)
            self._input(image)

    def _input(self, image: CameraImage | MissingImage) -> None:
        if isinstance(image, MissingImage):  # a bad image's place: its time step forms with the other cameras
            self._collected(self.pipeline.add_frame(image.to_frame()), image.record_ns)
            return
        self.summary.images_read += 1
        self._write_input(image)
        size = tuple(image.rgb.shape[:2])
        self._check_size(image.camera, size)
        self.source_sizes[image.camera] = size
        self.truth.add_image(image)
        self._collected(self.pipeline.add_frame(image.to_frame()), image.record_ns)

    def _collected(self, collected: Collected, record_ns: int) -> None:
        self.truth.keep_only(self.pipeline.held_views())
        if collected.frameset is None:
            return
        self.summary.framesets += 1
        if collected.reset:  # time went backwards: instance IDs start over, so do their embeddings
            self.query.forget()
            if self.record.segmentation is not None:
                self.record.segmentation.restart()
        if collected.window is not None:
            result = self.pipeline.process_window(collected.window)
            if not result.discarded:
                self._output(result, record_ns)

    def _check_size(self, camera: str, size: tuple[int, int]) -> None:
        previous = self.source_sizes.get(camera)
        if previous is not None and previous != size:
            self.warn(("size-change", camera), f"camera '{camera}' changed image size from {previous[1]}x{previous[0]} "
                      f"to {size[1]}x{size[0]}; outputs follow the new size")
        for other, other_size in self.source_sizes.items():
            if other != camera and other_size != size:
                h, w = self.config.input.image_height, self.config.input.image_width
                self.warn(("size-mismatch", *sorted((camera, other))),
                          f"cameras '{other}' ({other_size[1]}x{other_size[0]}) and '{camera}' ({size[1]}x{size[0]}) "
                          f"have different image sizes; each is resized to the model input {w}x{h} and its "
                          "outputs are resized back to its own size")

    def _write_input(self, image: CameraImage) -> None:
        header = Header(image.stamp_ns, image.frame_id)
        h, w = image.rgb.shape[:2]
        if image.intrinsics is not None:  # before the first camera_info there is none to record
            self._write(C.camera_info_topic(image.camera), image.record_ns,
                        L.camera_info(header, image.intrinsics, w, h))
        self._write(C.image_topic(image.camera), image.record_ns, L.rgb_image(header, image.rgb))
        if image.world_from_camera is not None:
            self._write(C.TF_TOPIC, image.record_ns, L.tf_message([L.TransformData(
                self.reader.world_frame, image.frame_id, image.stamp_ns, image.world_from_camera)]))

    def _output(self, result: WindowResult, record_ns: int) -> None:
        if self.summary.windows == 0:
            self.summary.first_window_s = time.monotonic() - self.replay_started
            self.summary.process_age_at_first_window_s = process_age_s()
        self.summary.windows += 1
        for msg in self.adapter.messages(result, self.source_sizes):
            self._write(msg.topic, record_ns, msg.data)
        self.record.add_window_timings(result.timings_ms, metric=result.metric)
        for i, view in enumerate(result.views):
            if not view.new:
                continue
            entry = self.truth.get(ViewKey(view.camera, view.stamp_ns))
            rgb = entry.image.rgb if entry is not None and entry.image is not None else None
            self.summary.views += 1
            self.record.add_view(
                result.instance_images[i], None if entry is None else entry.instances, image=rgb,
                pred_depth=result.depth[i], gt_depth=None if entry is None else entry.depth,
                label=f"{view.camera} {view.stamp_ns / 1e9:.2f} s")
            pose = None if entry is None or entry.image is None else entry.image.world_from_camera
            predicted = view.world_from_camera
            if predicted is not None and pose is not None:
                self.record.add_camera_position(predicted[:3, 3], pose)
        if self.record.segmentation is not None:
            self.record.add_cloud(result.points, result.point_ids, self._window_truth(result))
        self.query.add(result)

    def _window_truth(self, result: WindowResult) -> list[tuple]:
        """(intrinsics, pose, published depth, true IDs) of the window's views with ground truth (3D scores)."""
        out = []
        for i, view in enumerate(result.views):
            entry = self.truth.get(ViewKey(view.camera, view.stamp_ns))
            if entry is not None and entry.instances is not None and view.intrinsics is not None \
                    and view.world_from_camera is not None:
                out.append((view.intrinsics, view.world_from_camera, result.depth[i], entry.instances))
        return out

    # ------------------------------------------------------------------ end
    def _finish(self) -> None:
        s = self.summary
        report = self.reader.report
        s.truncated = report.truncated
        s.skipped = dict(report.skipped)
        s.flagged = dict(report.flagged)
        for text in report.warnings:
            if text not in s.warnings:
                s.warnings.append(text)
        s.warnings.extend(self.query.warnings)
        s.output_counts = {t: n for t, n in self.writer.counts.items() if n}
        s.reexpressions = self.pipeline.reexpressions
        s.tf_dropout_windows = self.pipeline.tf_dropout_windows
        if s.images_read == 0:
            self.warn(("no-images",), f"no camera image of {self.replay.input_bag} could be used "
                      f"(skipped: {s.skipped or 'none'}); the output bag holds no messages")
        elif s.windows == 0:
            self.warn(("no-windows",), f"{s.images_read} images gave no complete window (window.size "
                      f"{self.config.window.size} keyframes of every camera in {self.config.input.cameras} needed)")
        if s.truncated:
            self.record.notes.append("The input bag is damaged or cut short: only its intact part was replayed.")
        if s.stopped:
            self.record.notes.append(f"The replay stopped early ({s.stopped}); the report covers what ran.")
        if s.time_jumps:
            self.record.notes.append(f"Time jumped back {s.time_jumps} time(s) (looped bag): the pipeline "
                                     "restarted each time.")
        report_dir = self.replay.report_dir
        if report_dir is None and self.reader.has_ground_truth:
            report_dir = default_report_dir(self.replay.output_bag)
        if report_dir is not None:
            try:
                s.report = write_report(self.record, report_dir)
            except Exception as exc:  # a report failure must not hide the replay's own result
                self.warn(("report",), f"could not write the report to {report_dir}: {type(exc).__name__}: {exc}")
        if self.replay.save_query_state:
            try:
                json_path, _ = self.query.save(self.replay.output_bag / QUERY_STATE_STEM, self.pipeline.snapshot())
                s.query_state = json_path
            except Exception as exc:  # as above
                self.warn(("query-state",), f"could not save the query state: {type(exc).__name__}: {exc}")


def replay_bag(input_bag: str | Path, output_bag: str | Path, config: IggtConfig | None = None,
               engine: Engine | None = None, **options: Any) -> ReplaySummary:
    """Replay one bag; `options` are those of `Replay` (rate, report_dir, cameras, storage, progress, ...)."""
    return Replay(input_bag, output_bag, config, engine, **options).run()


# ---------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN_BAG", help="rosbag2 directory (sqlite3 or mcap) or .mcap file")
    parser.add_argument("-o", "--output", metavar="OUT_BAG", required=True, help="output rosbag2 directory to create")
    parser.add_argument("--config", default=None, help="parameter file (YAML), as for the node; default: built-ins")
    parser.add_argument("--engine", choices=ENGINE_BACKENDS, default=None,
                        help="inference backend (default: engine.backend of the config); 'oracle' answers from "
                             "the bag's ground truth")
    parser.add_argument("--checkpoint", default=None, help="model weights (default: the embedded tiny model)")
    parser.add_argument("--engine-path", default=None, help="ONNX model or TensorRT plan")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, default=None, metavar="R", help="replay at R x bag time")
    pace.add_argument("--fast", action="store_true", help="replay as fast as possible (the default)")
    parser.add_argument("--report", default=None, metavar="DIR",
                        help="report directory (default with ground truth: OUT_BAG_report next to the output)")
    parser.add_argument("--cameras", nargs="+", default=None, metavar="NAME",
                        help="cameras to replay (default: the configured ones, else every camera in the bag)")
    parser.add_argument("--storage", choices=tuple(STORAGES), default="mcap", help="output bag storage (default mcap)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> IggtConfig:
    """The configuration file with the engine options of the command line applied."""
    config = load_config(args.config)
    overrides: dict[str, Any] = {}
    if args.engine:
        overrides["engine.backend"] = args.engine
    if args.checkpoint:
        overrides["engine.checkpoint"] = args.checkpoint
    if args.engine_path:
        overrides["engine.engine_path"] = args.engine_path
    return config.replace(**overrides) if overrides else config


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
        summary = replay_bag(args.input, args.output, config, rate=None if args.fast else args.rate,
                             report_dir=args.report, cameras=args.cameras, storage=args.storage,
                             progress=not args.no_progress)
    except (ReplayError, ConfigError) as exc:
        print(f"iggt-ros replay: {exc}", file=sys.stderr)
        return 2
    print_summary(summary)
    return 1 if summary.stopped else 0


def print_summary(summary: ReplaySummary, out: Any = None) -> None:
    out = out or sys.stdout
    print(f"replayed {summary.input_bag} -> {summary.output_bag}", file=out)
    for line in summary.headline():
        print(f"  {line}", file=out)
    if summary.stopped:
        print(f"  stopped early: {summary.stopped}", file=out)
    if summary.skipped:
        print("  input messages skipped: " + ", ".join(f"{n} {why}" for why, n in sorted(summary.skipped.items())),
              file=out)
    if summary.warnings:
        print(f"  {len(summary.warnings)} warning(s):", file=out)
        for w in summary.warnings[:10]:
            print(f"    - {w.splitlines()[0]}", file=out)
    if summary.report is not None:
        print(f"  report: {summary.report.summary_md}", file=out)
    if summary.query_state is not None:
        print(f"  query state: {summary.query_state} (iggt-ros query {summary.output_bag} \"the red cube\")", file=out)
