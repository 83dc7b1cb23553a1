"""Ground-truth oracle engine: an evaluation mode that isolates the perception pipeline from the model.

The oracle answers `infer` from the true depth, camera poses and instance masks of each view (looked
up by `ViewKey`), degraded the way a real model's output is degraded, and expressed the way a real
model expresses it:

* geometry in the model frame (the first view's camera frame, OpenCV axes), optionally under an
  unknown similarity transform per window (VGGT-style models normalise scale per window and nothing
  ties one window's frame to the next), with multiplicative depth noise and small pose noise;
* instance features: one random unit 8-D vector per object and one for the background, plus per-pixel
  Gaussian noise, a random positive gain per pixel (raw features are not normalised), and blurred
  boundaries (pixels near a label change are mixed with their neighbour's vector). Vectors are either
  stable per object for the whole sequence or redrawn every window (a real instance head's embedding
  space is window-local: then only shared frames and 3D position can carry identity across windows);
* confidence: high inside objects, lower at boundaries;
* everything resampled (nearest neighbour) to the engine's input size.

Measured pipeline numbers under this engine are an upper bound of what the model can reach: they test
windows, clustering, tracking and mapping, not the network.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np

from iggt_ros.engine.base import Engine, EngineError, ViewKey, WindowPrediction
from iggt_ros.engine.preprocess import resize_nearest
from iggt_ros.synthetic.types import RenderedView, SyntheticSequence

TruthLookup = Callable[[ViewKey], RenderedView] | Mapping[ViewKey, RenderedView]


def truth_from_sequence(sequence: SyntheticSequence) -> dict[ViewKey, RenderedView]:
    """Every view of a synthetic sequence keyed by (camera, stamp)."""
    return {ViewKey(v.camera, int(v.stamp_ns)): v for v in sequence.views()}


def twin_blind_truth(sequence: SyntheticSequence) -> dict[ViewKey, RenderedView]:
    """`truth_from_sequence` with every identical duplicate under its original's ID: an oracle fed this gives
    both objects of a pair the same feature, as an instance head that follows appearance does, so only the
    geometry can tell them apart (what `perception.twin_split` is for)."""
    lut = np.arange(max((o.id for o in sequence.scene.objects), default=0) + 1, dtype=np.uint16)
    for o in sequence.scene.objects:
        if o.duplicate_of:
            lut[o.id] = o.duplicate_of
    return {k: replace(v, instance_ids=lut[v.instance_ids]) for k, v in truth_from_sequence(sequence).items()}


def _random_rotation(rng: np.random.Generator, max_angle_rad: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= max(np.linalg.norm(axis), 1e-12)
    angle = rng.uniform(-max_angle_rad, max_angle_rad) if max_angle_rad > 0 else 0.0
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def _boundary_mask(ids: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels within `radius` of a label change, and for each such pixel one differing neighbour label."""
    boundary = np.zeros(ids.shape, bool)
    other = ids.copy()
    for _ in range(max(radius, 0)):
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            shifted = np.roll(other, (dy, dx), axis=(0, 1))
            diff = shifted != ids
            take = diff & ~boundary
            other = np.where(take, shifted, other)
            boundary |= diff
    return boundary, other


class OracleEngine(Engine):
    """An `Engine` that returns degraded ground truth for the views it is asked about."""

    name = "oracle"

    def __init__(
        self,
        truth: TruthLookup,
        input_size: tuple[int, int] = (336, 504),
        feature_dim: int = 8,
        feature_noise: float = 0.08,
        boundary_px: int = 2,
        boundary_mix: float = 0.5,
        depth_noise: float = 0.005,
        pose_noise_m: float = 0.0,
        pose_noise_deg: float = 0.0,
        similarity: str = "none",
        window_local_features: bool = False,
        min_feature_distance: float = 1.0,
        seed: int = 0,
    ) -> None:
        """
        Args:
            truth: ViewKey -> RenderedView (a dict, e.g. `truth_from_sequence(seq)`, or a callable).
            input_size: (H, W) of the outputs; multiples of 28 like a real engine.
            feature_noise: standard deviation of the Gaussian noise added to each unit feature.
            boundary_px: width of the blurred band around label changes.
            boundary_mix: largest weight of the neighbour's vector mixed into a boundary pixel.
            depth_noise: relative standard deviation of multiplicative depth noise.
            pose_noise_m, pose_noise_deg: noise on the camera poses of views after the first.
            similarity: 'none' (model frame = first camera, metric), 'scale' (unknown scale per window),
                'full' (unknown scale, rotation and translation per window).
            window_local_features: redraw every object's feature vector each window.
            min_feature_distance: smallest L2 distance between two objects' unit vectors (a trained head's
                push margin; 1.0 means cosine <= 0.5). Met by rejection sampling where 8-D allows it.
            seed: all randomness derives from it (and from the window's views), so runs repeat exactly.
        """
        if similarity not in ("none", "scale", "full"):
            raise ValueError(f"similarity must be 'none', 'scale' or 'full', got {similarity!r}")
        h, w = input_size
        if h % 28 or w % 28:
            raise EngineError(f"oracle input size {input_size} must be multiples of 28 like the model's")
        self._truth = truth
        self._size = (int(h), int(w))
        self.feature_dim = int(feature_dim)
        self.feature_noise = float(feature_noise)
        self.boundary_px = int(boundary_px)
        self.boundary_mix = float(boundary_mix)
        self.depth_noise = float(depth_noise)
        self.pose_noise_m = float(pose_noise_m)
        self.pose_noise_deg = float(pose_noise_deg)
        self.similarity = similarity
        self.window_local_features = bool(window_local_features)
        self.min_feature_distance = float(min_feature_distance)
        self._vector_cache: dict[int, dict[int, np.ndarray]] = {}
        self.seed = int(seed)
        self.calls = 0
        self.last_similarity: tuple[float, np.ndarray, np.ndarray] | None = None
        """(s, R, t) of the last window: model = s * R * first_camera + t (for tests)."""

    @classmethod
    def from_sequence(cls, sequence: SyntheticSequence, **kwargs) -> OracleEngine:
        return cls(truth_from_sequence(sequence), **kwargs)

    @property
    def input_size(self) -> tuple[int, int]:
        return self._size

    def _lookup(self, key: ViewKey) -> RenderedView:
        try:
            return self._truth(key) if callable(self._truth) else self._truth[key]
        except KeyError as exc:
            raise EngineError(f"oracle engine has no ground truth for camera '{key.camera}' at stamp "
                              f"{key.stamp_ns}: feed it the same sequence the frames come from") from exc

    def object_vectors(self, object_ids: Sequence[int], window_seed: int = 0) -> dict[int, np.ndarray]:
        """Unit feature directions (0 = background), at least `min_feature_distance` apart.

        A trained instance head pushes different instances apart (IGGT's loss: margin 1.0 between unit
        features), so the oracle does not hand out near-collinear vectors. Vectors are drawn in ID
        order from a stream seeded by (seed, window if window-local), so an object keeps its vector
        whatever other objects a window holds.
        """
        salt = window_seed if self.window_local_features else 0
        cache = self._vector_cache.get(salt)
        if cache is None:
            cache = self._vector_cache[salt] = {}
            if len(self._vector_cache) > 64:  # window-local vectors: keep memory bounded
                self._vector_cache.pop(next(iter(self._vector_cache)))
        need = max(int(i) for i in object_ids) if len(object_ids) else 0
        max_cos = 1.0 - 0.5 * self.min_feature_distance ** 2
        for oid in range(need + 1):
            if oid in cache:
                continue
            rng = np.random.default_rng([self.seed, oid, salt, 7])
            others = np.stack([cache[j] for j in range(oid)]) if oid else np.zeros((0, self.feature_dim))
            for _ in range(200):
                vec = rng.normal(size=self.feature_dim)
                vec /= np.linalg.norm(vec)
                if others.shape[0] == 0 or float((others @ vec).max()) <= max_cos:
                    break
            cache[oid] = vec
        return {int(i): cache[int(i)] for i in object_ids}

    def infer(self, images: np.ndarray, views: Sequence[ViewKey] | None = None) -> WindowPrediction:
        if views is None:
            raise EngineError("the oracle engine needs the ViewKey of every image to look up the truth")
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[0] != len(views):
            raise EngineError(f"oracle engine got images of shape {images.shape} for {len(views)} views")
        self.calls += 1
        truths = [self._lookup(k) for k in views]
        h, w = self._size
        window_seed = zlib.crc32(repr([(k.camera, k.stamp_ns) for k in views]).encode())
        rng = np.random.default_rng([self.seed, window_seed])

        # unknown similarity of this window: model = s * R * cam0 + t
        if self.similarity == "none":
            s, r_sim, t_sim = 1.0, np.eye(3), np.zeros(3)
        else:
            s = float(np.exp(rng.uniform(np.log(0.4), np.log(2.5))))
            r_sim = _random_rotation(rng, np.pi) if self.similarity == "full" else np.eye(3)
            t_sim = rng.normal(scale=1.0, size=3) if self.similarity == "full" else np.zeros(3)
        self.last_similarity = (s, r_sim, t_sim)

        world_from_cam0 = np.asarray(truths[0].world_from_camera, float)
        v = len(views)
        extrinsics = np.zeros((v, 3, 4), np.float32)
        intrinsics = np.zeros((v, 3, 3), np.float32)
        depth = np.zeros((v, h, w), np.float32)
        conf = np.zeros((v, h, w), np.float32)
        points = np.zeros((v, h, w, 3), np.float32)
        feats = np.zeros((v, h, w, self.feature_dim), np.float32)
        out_images = np.zeros((v, h, w, 3), np.uint8)
        ids_all = [np.asarray(resize_nearest(t.instance_ids, (h, w)), np.int64) for t in truths]
        vectors = self.object_vectors(np.unique(np.concatenate([x.ravel() for x in ids_all])).tolist(), window_seed)
        u, vv = np.meshgrid(np.arange(w, dtype=np.float64) + 0.5, np.arange(h, dtype=np.float64) + 0.5)
        for i, truth in enumerate(truths):
            src_h, src_w = truth.depth.shape
            k = np.asarray(truth.intrinsics, float).copy()
            k[0] *= w / src_w
            k[1] *= h / src_h
            intrinsics[i] = k
            world_from_cam = np.asarray(truth.world_from_camera, float).copy()
            if i > 0 and (self.pose_noise_m > 0 or self.pose_noise_deg > 0):
                world_from_cam[:3, :3] = world_from_cam[:3, :3] @ _random_rotation(
                    rng, np.radians(self.pose_noise_deg))
                world_from_cam[:3, 3] += rng.normal(scale=self.pose_noise_m, size=3)
            cam0_from_cam = np.linalg.inv(world_from_cam0) @ world_from_cam
            # model_from_cam (scaled): rotation r_sim @ R_0i, translation s * r_sim @ t_0i + t_sim
            r_mc = r_sim @ cam0_from_cam[:3, :3]
            t_mc = s * (r_sim @ cam0_from_cam[:3, 3]) + t_sim
            extrinsics[i, :, :3] = r_mc.T
            extrinsics[i, :, 3] = -r_mc.T @ t_mc

            d = resize_nearest(np.asarray(truth.depth, np.float64), (h, w))
            if self.depth_noise > 0:
                d = d * (1.0 + rng.normal(scale=self.depth_noise, size=d.shape))
            depth[i] = s * d
            x = (u - k[0, 2]) / k[0, 0] * d
            y = (vv - k[1, 2]) / k[1, 1] * d
            cam_pts = np.stack([x, y, d], axis=-1) * s
            points[i] = cam_pts @ r_mc.T + t_mc

            ids = ids_all[i]
            boundary, other = _boundary_mask(ids, self.boundary_px)
            keys = np.array(sorted(vectors))
            table = np.stack([vectors[int(j)] for j in keys])
            f = table[np.searchsorted(keys, ids)]
            if boundary.any() and self.boundary_mix > 0:
                mix = rng.uniform(0, self.boundary_mix, size=int(boundary.sum()))[:, None]
                f_other = table[np.searchsorted(keys, other[boundary])]
                f[boundary] = (1 - mix) * f[boundary] + mix * f_other
            f = f + rng.normal(scale=self.feature_noise, size=f.shape)
            gain = rng.uniform(0.5, 2.0, size=(h, w, 1))
            feats[i] = f * gain
            c = 1.0 + 4.0 * np.exp(-0.5 * rng.normal(size=(h, w)) ** 2)
            c[boundary] = 1.0 + 0.5 * rng.random(int(boundary.sum()))
            conf[i] = c
            out_images[i] = resize_nearest(np.asarray(truth.rgb), (h, w))
        return WindowPrediction(
            extrinsics=extrinsics,
            intrinsics=intrinsics,
            depth=depth,
            depth_conf=conf,
            world_points=points,
            world_points_conf=conf.copy(),
            instance_features=feats,
            images=out_images,
            engine=self.name,
        )
