"""Per-pixel instance features of one window -> 3D-consistent instance masks for all its views.

IGGT's instance head gives every pixel of every view an 8-D feature; pixels of one object share a
direction in feature space across all views of the window. The official recipe L2-normalises,
smooths over 20 nearest neighbours in 3D and runs HDBSCAN over every pixel of every view jointly.
That is minutes per window on a CPU (HDBSCAN grows faster than linearly: ~0.4 s at 10k points,
~6 s at 100k, and a window has ~1.4 M pixels), so this module keeps the joint-clustering idea and
changes where the work is spent:

1. Patch sampling. Features are summed over small pixel patches (2x2 reads; the grid follows the
   model input size so that every view gives about ``patches_per_view`` patches: see scaling.py).
   Averaging denoises like the kNN smoothing does, and the coherence of a patch (length of the summed
   features over the summed lengths, 1 when all point the same way) tells whether it is clean: patches
   that straddle an instance boundary or hold noise are not sampled. At most ``max_samples`` coherent
   patches, weighted by depth confidence, are clustered jointly over all views, so labels stay
   consistent across views. Because the grid scales with the image, an object covering a given share
   of the view gives the same number of samples at 140x84 as at 504x336; with a fixed pixel grid a
   small model input leaves small objects fewer samples than HDBSCAN's ``min_cluster_size``.
2. HDBSCAN on those thousand-odd samples (``fast_hdbscan``, which runs on every core, or the classic
   ``hdbscan``; a pass that may return one cluster falls back to ``hdbscan``: see `run_hdbscan`).
   A window that shows one structure (floor or wall) and only small objects is a single dense cluster
   plus a few small groups; HDBSCAN without ``allow_single_cluster`` then calls everything noise, so a
   first pass that finds nothing is repeated with a single cluster allowed, and the small objects are
   found among the samples that cluster does not explain (later passes, below). Prototypes closer than
   ``merge_cosine`` are one instance: real instance heads give groups of identical features, which HDBSCAN
   splits into twin clusters that would divide an object between them pixel by pixel.
3. Assignment of every pixel to the nearest cluster prototype (cosine similarity; the argmax does not
   need normalised features), coarse to fine: 4x4-px blocks are assigned first; a block that is
   coherent and agrees with its four neighbours gives its label to all its pixels, and only the other
   blocks (boundaries, noise, invalid pixels: typically a fifth of the image) are assigned pixel by
   pixel. An argmax over 1.4 M pixels x K prototypes costs more than everything else together on
   2 cores; this gives the same masks at a fraction of it (``assignment: exact`` assigns every pixel, the
   reference). The per-pixel passes live in pixel_ops.py and run on numpy or a torch device (a CUDA GPU
   next to the engine: ``pixel_device``). Pixels farther than
   ``max_assign_distance`` from every prototype (noise, unseen structures), invalid pixels and
   low-confidence pixels stay 0.
4. Clean-up: per view, connected pieces of a mask much smaller than its largest piece (speckle: features
   of background pixels that happen to lie near a prototype) become 0, so every mask is one or a few
   regions of meaningful size; a cluster that is only a thin band along another instance's outline (features
   blurred across the boundary: `rims`) is no instance; a cluster covering more than ``background_fraction``
   of the window's pixels and half of its 3D extent is scene structure (floor, walls) and is labelled 0;
   per view, masks smaller than ``min_instance_area`` (a fraction of the view) are dropped from that view
   (a quarter of it for an instance that is large elsewhere in the window: a partial view at the image
   border).
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from iggt_ros.config import ClusteringConfig
from iggt_ros.perception import pixel_kernels, rims
from iggt_ros.perception.blas import single_threaded_blas
from iggt_ros.perception.pixel_ops import BlockStats, make_pixel_ops, min_cosine
from iggt_ros.perception.scaling import ViewScale, patch_grid_size, view_scale
from iggt_ros.perception.speckle import drop_small_pieces_window, warm_up

log = logging.getLogger(__name__)

_EPS = 1e-12


def label_order(labels: np.ndarray, num_labels: int) -> np.ndarray:
    """Stable argsort of window labels 0..`num_labels`, grouping pixels (or points) by instance: as 16-bit integers
    when they fit, which numpy sorts by radix, several times faster than 32-bit ones (tens of thousands of
    values, a few labels)."""
    return np.argsort(labels.astype(np.int16) if num_labels < 2 ** 15 else labels, kind="stable")


@dataclass
class ClusterResult:
    """Window-local instance labels: 1..K, 0 = no instance."""

    labels: np.ndarray
    """[V,H,W] int32."""
    prototypes: np.ndarray
    """[K,C] float32 unit feature per instance (row k-1 is label k)."""
    pixel_counts: np.ndarray
    """[V,K+1] int64 labelled pixels per view and label (column 0 = unlabelled)."""
    num_samples: int = 0
    noise_fraction: float = 0.0
    """Fraction of the clustered samples HDBSCAN called noise."""
    background_labels: list[int] = field(default_factory=list)
    """Window-local clusters judged to be scene structure (relabelled 0)."""
    timings_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def num_instances(self) -> int:
        return int(self.prototypes.shape[0])


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Unit vectors along `axis` (zero vectors stay zero), as the official recipe's F.normalize."""
    norm = np.sqrt(np.einsum("...i,...i->...", x, x))[..., None] if axis == -1 else \
        np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, _EPS)


def import_backend(backend: str):
    """The clustering library's module (importing it pulls in scikit-learn: a few hundred ms the first time)."""
    if backend == "hdbscan":
        import hdbscan

        return hdbscan
    if backend == "fast_hdbscan":
        import fast_hdbscan

        return fast_hdbscan
    raise ValueError(f"unknown clustering backend '{backend}': use 'hdbscan' or 'fast_hdbscan'")


def merge_duplicates(protos: np.ndarray, counts: np.ndarray, c: int, max_cos: float) -> np.ndarray:
    """Rows of `protos` kept after folding near-identical feature directions (cosine >= max_cos) into one.

    HDBSCAN splits a group of (near-)identical samples into several clusters when their mutual reachability
    distances tie, which real instance heads produce (features saturate to a few directions). Twin
    prototypes split one object between them pixel by pixel, by rounding noise, and the speckle that
    results costs quality and clean-up time. The larger cluster (more members) is kept.
    """
    if len(protos) < 2 or max_cos >= 1.0:
        return np.arange(len(protos))
    order = np.argsort(-counts, kind="stable")
    kept: list[int] = []
    for i in order:
        if not kept or float(np.max(protos[kept, :c] @ protos[i, :c])) < max_cos:
            kept.append(int(i))
    return np.sort(np.asarray(kept, np.int64))


def run_hdbscan(samples: np.ndarray, backend: str, min_cluster_size: int, min_samples: int,
                cluster_selection_epsilon: float = 0.0, allow_single_cluster: bool = False) -> np.ndarray:
    """HDBSCAN labels (-1 = noise) with either library; the parameters mean the same in both.

    fast_hdbscan (0.3) returns no cluster, even with ``allow_single_cluster``, when the cluster hierarchy
    never splits (one group, the rest falling off as noise): exactly the lone tiny object a residual pass
    exists to find. Such an all-noise answer is asked of the classic ``hdbscan`` again.
    """
    labels = _hdbscan_once(samples, backend, min_cluster_size, min_samples, cluster_selection_epsilon,
                           allow_single_cluster)
    if allow_single_cluster and backend != "hdbscan" and labels.size and labels.max() < 0:
        labels = _hdbscan_once(samples, "hdbscan", min_cluster_size, min_samples, cluster_selection_epsilon, True)
    return labels


def _hdbscan_once(samples: np.ndarray, backend: str, min_cluster_size: int, min_samples: int,
                  cluster_selection_epsilon: float, allow_single_cluster: bool) -> np.ndarray:
    min_samples = max(1, min(min_samples, len(samples) - 1))
    library = import_backend(backend)
    if backend == "hdbscan":
        model = library.HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples,
                                cluster_selection_epsilon=cluster_selection_epsilon, core_dist_n_jobs=1,
                                allow_single_cluster=allow_single_cluster)
    else:
        model = library.HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples,
                                cluster_selection_epsilon=cluster_selection_epsilon,
                                allow_single_cluster=allow_single_cluster)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both libraries warn about deprecated sklearn arguments
        return np.asarray(model.fit_predict(np.ascontiguousarray(samples, dtype=np.float64)), dtype=np.int64)


@functools.cache
def _warm_backend(backend: str) -> None:
    """One small fit, once per process: fast_hdbscan loads its compiled code at its first call."""
    run_hdbscan(np.random.default_rng(0).normal(size=(32, 4)), backend, 5, 3)


class InstanceClusterer:
    """Clusters the instance features of a window into labels shared by all its views."""

    block_px = 4
    """Side of the blocks of the coarse assignment pass (read at every second pixel, like 4-px patches)."""

    def __init__(self, config: ClusteringConfig, seed: int = 0, threads: int = 0) -> None:
        self.config = config
        self.threads = threads
        """Threads of the compiled per-pixel passes and of fast_hdbscan (the thread policy's `pixel`; 0 = all)."""
        self._rng = np.random.default_rng(seed)
        self._pos_centre = np.zeros(3, np.float32)
        self._pos_scale = 1.0
        self.pixels = make_pixel_ops(config.pixel_device)
        """Per-pixel work (validity, block sums, assignment): numpy, or torch on a device."""
        # at construction: the first window must not pay the imports (~0.4 s each) nor fast_hdbscan's first call
        # (its compiled code loads then); hdbscan answers the single-cluster passes fast_hdbscan cannot (run_hdbscan)
        import_backend("hdbscan")
        _warm_backend(config.backend)
        warm_up()  # and not the speckle kernel's compilation either
        pixel_kernels.warm_up()  # nor the clean-up's counting and relabelling kernels

    def cluster(self, features: np.ndarray, valid: np.ndarray | None = None,
                confidence: np.ndarray | None = None, points: np.ndarray | None = None) -> ClusterResult:
        """Label every pixel of every view (with one BLAS thread, see blas.py, and `threads` compiled ones).

        Args:
            features: [V,H,W,C] raw instance features (not normalised).
            valid: [V,H,W] bool, pixels with usable geometry and features (default: finite features).
            confidence: [V,H,W] depth confidence; the lowest ``confidence_percentile`` is not labelled.
            points: [V,H,W,3] points in any frame: tell scene structure from big objects, and join the
                features when ``position_weight`` > 0.
        """
        with pixel_kernels.parallel_section(self.threads), single_threaded_blas():
            return self._cluster(features, valid, confidence, points)

    def _cluster(self, features: np.ndarray, valid: np.ndarray | None, confidence: np.ndarray | None,
                 points: np.ndarray | None) -> ClusterResult:
        cfg = self.config
        t0 = time.perf_counter()
        v, h, w, c = features.shape
        scale = view_scale(cfg, h, w)
        feats = np.asarray(features, dtype=np.float32)
        pixels = self.pixels
        given = np.ones((v, h, w), bool) if valid is None else np.asarray(valid, bool)
        # usually every feature is finite, which the block sums can tell in their own pass over the window
        blocks = pixels.block_stats_if_finite(feats, given, self.block_px)
        if blocks is not None:
            valid = given
        else:
            finite = pixels.finite(feats)  # NaN/inf anywhere propagates
            valid = given & finite
            if not finite.all():
                feats = np.where(finite[..., None], feats, 0.0).astype(np.float32)
        dev_feats = pixels.prepare(feats)
        conf = None if confidence is None else np.asarray(confidence, dtype=np.float32)
        threshold = None
        if conf is not None and cfg.confidence_percentile > 0:
            sub_conf = conf[:, ::8, ::8][valid[:, ::8, ::8]]  # a percentile needs thousands of values, not all
            sub_conf = sub_conf[np.isfinite(sub_conf)]
            if sub_conf.size:
                threshold = float(np.percentile(sub_conf, cfg.confidence_percentile))
        timings: dict[str, float] = {}
        result_warnings: list[str] = []

        def nothing(msg: str, num_samples: int = 0, noise: float = 0.0) -> ClusterResult:
            log.warning(msg)
            result_warnings.append(msg)
            timings["total"] = (time.perf_counter() - t0) * 1e3
            return ClusterResult(np.zeros((v, h, w), np.int32), np.zeros((0, c), np.float32),
                                 np.zeros((v, 1), np.int64), num_samples=num_samples, noise_fraction=noise,
                                 timings_ms=timings, warnings=result_warnings)

        if not valid.any():
            return nothing("no valid pixels in the window (non-finite features or depth everywhere): no instances")
        if blocks is None and h % self.block_px == 0 and w % self.block_px == 0:
            blocks = pixels.block_stats(dev_feats, valid, self.block_px)
        cand, cand_pos, cand_w = self._sample(feats, valid, conf, points, blocks, scale, threshold)
        timings["sampling"] = (time.perf_counter() - t0) * 1e3
        need = max(2 * scale.min_cluster_size, 10)
        if len(cand) < need:
            return nothing(f"only {len(cand)} coherent feature patches in the window (need {need}): the instance "
                           "features look like noise, no instances this window", len(cand), 1.0)

        t1 = time.perf_counter()
        use_position = cfg.position_weight > 0 and cand_pos is not None
        x_all = np.concatenate([cand, cfg.position_weight * cand_pos], axis=1) if use_position else cand
        protos, num_samples, noise_fraction = self._cluster_candidates(x_all, cand_w, c, scale.min_cluster_size)
        timings["hdbscan"] = (time.perf_counter() - t1) * 1e3
        if len(protos) == 0:
            return nothing(f"HDBSCAN found no cluster among {num_samples} samples (all noise): no instances "
                           "this window", num_samples, noise_fraction)

        t2 = time.perf_counter()
        min_cos = min_cosine(cfg.max_assign_distance)
        if use_position:
            label_img = self._assign_with_position(feats, valid, protos, points)
        elif blocks is not None and cfg.assignment == "coarse_to_fine":
            label_img = pixels.assign_coarse_to_fine(dev_feats, valid, protos, blocks, self.block_px, min_cos)
        else:
            label_img = pixels.assign_exact(dev_feats, valid, protos, min_cos)
        timings["assignment"] = (time.perf_counter() - t2) * 1e3

        t3 = time.perf_counter()
        label_img, kept_protos, pixel_counts, background = self._clean(label_img, protos[:, :c], valid, points,
                                                                       scale.min_instance_area_px)
        timings["cleanup"] = (time.perf_counter() - t3) * 1e3
        timings["total"] = (time.perf_counter() - t0) * 1e3
        return ClusterResult(label_img, kept_protos.astype(np.float32), pixel_counts, num_samples=num_samples,
                             noise_fraction=noise_fraction, background_labels=background, timings_ms=timings,
                             warnings=result_warnings)

    # ------------------------------------------------------------------ stages
    def _sample(self, feats: np.ndarray, valid: np.ndarray, conf: np.ndarray | None, points: np.ndarray | None,
                blocks: BlockStats | None, scale: ViewScale,
                conf_threshold: float | None = None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Every coherent patch: unit mean feature, normalised position (optional), confidence weight.

        A patch sums its 2x2 reads (``scale.read_px`` apart); patches start every ``scale.stride_px``
        pixels. A patch is sampled only when all four reads are valid and confident enough.
        """
        cfg = self.config
        v, h, w, c = feats.shape
        g, r = scale.stride_px, scale.read_px
        ph, pw = patch_grid_size(h, g, r), patch_grid_size(w, g, r)
        if ph == 0 or pw == 0:
            return np.zeros((0, c), np.float32), None, np.zeros(0)
        reads = [(i, j) for i in (0, r) for j in (0, r)]

        def grid(a: np.ndarray, i: int, j: int) -> np.ndarray:
            return a[:, i:i + (ph - 1) * g + 1:g, j:j + (pw - 1) * g + 1:g]

        if blocks is not None and (g, r) == (self.block_px, self.block_px // 2):
            # the patches are the coarse assignment's blocks: their sums and validity exist already
            fsum, nsum = blocks.sum[:, :ph, :pw], blocks.norm_sum[:, :ph, :pw]
            pvalid = blocks.valid[:, :ph, :pw].copy()
        else:
            fsum = np.zeros((v, ph, pw, c), np.float32)
            nsum = np.zeros((v, ph, pw), np.float32)
            pvalid = np.ones((v, ph, pw), bool)
            for i, j in reads:
                part = grid(feats, i, j)
                fsum += part
                nsum += np.sqrt(np.einsum("...i,...i->...", part, part))
                pvalid &= grid(valid, i, j)
        if conf_threshold is not None:
            for i, j in reads:
                pvalid &= grid(conf, i, j) >= conf_threshold
        length = np.sqrt(np.einsum("...i,...i->...", fsum, fsum))
        coherence = length / np.maximum(nsum, _EPS)
        keep = pvalid & (coherence >= cfg.min_patch_coherence) & (nsum > 0)
        idx = np.flatnonzero(keep.ravel())
        if idx.size == 0:
            return np.zeros((0, c), np.float32), None, np.zeros(0)
        vi, rem = np.divmod(idx, ph * pw)
        pi, pj = np.divmod(rem, pw)
        rows = np.minimum(pi * g + r, h - 1)  # a read pixel at the patch centre
        cols = np.minimum(pj * g + r, w - 1)
        if conf is not None:
            weight = np.clip(np.nan_to_num(conf[vi, rows, cols].astype(np.float64), nan=0.0), 1e-6, None)
        else:
            weight = np.ones(idx.size)
        flat_sum = fsum.reshape(-1, c)
        if pixel_kernels.AVAILABLE and flat_sum.dtype == np.float32 and flat_sum.flags.c_contiguous:
            samples = pixel_kernels.unit_rows(flat_sum, idx)
        else:
            samples = l2_normalize(flat_sum[idx].astype(np.float64)).astype(np.float32)
        positions = None
        if points is not None and cfg.position_weight > 0:
            positions = self._normalise_positions(np.asarray(points)[vi, rows, cols].astype(np.float32))
        return samples, positions, weight

    def _cluster_candidates(self, x_all: np.ndarray, weight: np.ndarray, c: int,
                            min_cluster_size: int) -> tuple[np.ndarray, int, float]:
        """HDBSCAN on a stratified sample, then again (twice at most) on the candidates no prototype explains.

        The later passes catch objects the first sample under-represented (few patches, or a hash
        bucket shared with the floor): they are exactly the candidates far from every prototype.
        A first pass that calls everything noise is run again with a single cluster allowed: the
        window is one dense structure plus groups too small to compete with it, and once that
        structure has a prototype the later passes look at exactly those groups.
        Clusters whose members are not tight around their prototype are dropped.
        Returns (prototypes [K, D], samples clustered, noise fraction of the first pass).
        """
        cfg = self.config
        min_cos = 1.0 - 0.5 * cfg.max_assign_distance ** 2
        protos: list[np.ndarray] = []
        remaining = np.arange(len(x_all))
        total_samples = 0
        noise_fraction = 1.0
        for round_index in range(3):  # rounds 1 and 2 look at the residual
            # later rounds look for what is left: small objects, possibly seen in a single view
            min_size = min_cluster_size if round_index == 0 else max(3, min_cluster_size // 2)
            if len(remaining) < min_size:
                break
            budget = cfg.max_samples if round_index == 0 else max(cfg.max_samples // 2, 2 * min_cluster_size)
            pick = remaining
            if len(pick) > budget:
                pick = remaining[self._stratified_choice(x_all[remaining, :c], weight[remaining], budget)]
            x = x_all[pick]
            # the residual may hold a single missed object: HDBSCAN must be allowed to return one cluster
            labels = run_hdbscan(x, cfg.backend, min_size, min(cfg.min_samples, min_size),
                                 cfg.cluster_selection_epsilon, allow_single_cluster=round_index > 0)
            total_samples += len(pick)
            if round_index == 0:
                noise_fraction = float(np.mean(labels < 0)) if labels.size else 1.0
                if labels.size and labels.max() < 0:
                    labels = run_hdbscan(x, cfg.backend, min_size, min(cfg.min_samples, min_size),
                                         cfg.cluster_selection_epsilon, allow_single_cluster=True)
            n_new = int(labels.max()) + 1 if labels.size else 0
            if n_new == 0:
                break
            member = labels >= 0
            new = np.zeros((n_new, x.shape[1]), np.float64)
            np.add.at(new, labels[member], x[member])
            counts = np.bincount(labels[member], minlength=n_new).astype(np.float64)
            new[:, :c] = l2_normalize(new[:, :c])
            new[:, c:] /= np.maximum(counts, 1.0)[:, None]
            # keep only tight clusters: a loose one is a blend of boundaries, not an object
            tightness = np.zeros(n_new)
            np.add.at(tightness, labels[member], np.einsum("ij,ij->i", x[member, :c], new[labels[member], :c]))
            tightness /= np.maximum(counts, 1.0)
            tight = tightness >= 0.5 * (1.0 + min_cos)
            new, counts = new[tight], counts[tight]
            # twins of a prototype (found before or in this pass) add nothing but pixel-level ties
            new = new[merge_duplicates(new, counts, c, cfg.merge_cosine)]
            if protos and len(new):
                old = np.stack(protos)[:, :c].astype(np.float64)
                new = new[(new[:, :c] @ old.T).max(axis=1) < cfg.merge_cosine]
            if len(new) == 0:
                break
            protos.extend(new.astype(np.float32))
            if round_index == 2:
                break  # no later pass needs the residual
            feature_protos = np.ascontiguousarray(np.stack(protos)[:, :c], dtype=np.float32)
            if pixel_kernels.AVAILABLE and x_all.dtype == np.float32 and x_all.flags.c_contiguous:
                explained = pixel_kernels.near_any(x_all, remaining, feature_protos, np.float32(min_cos))
            else:
                explained = (x_all[remaining, :c] @ np.ascontiguousarray(feature_protos.T)).max(axis=1) >= min_cos
            remaining = remaining[~explained]
        if not protos:
            return np.zeros((0, x_all.shape[1]), np.float32), total_samples, noise_fraction
        return np.stack(protos).astype(np.float32), total_samples, noise_fraction

    def _stratified_choice(self, feats: np.ndarray, weight: np.ndarray, n: int) -> np.ndarray:
        """Pick n rows so that every region of feature space gets a fair share.

        Floor and walls cover most pixels: uniform sampling would spend the budget on them and leave a
        small object a couple of samples, below HDBSCAN's min_cluster_size. Candidates are bucketed by
        the signs of 10 random projections (locality-sensitive hashing: near-identical directions
        share a bucket) and every bucket contributes up to the same quota, confidence-weighted within.
        """
        planes = np.random.default_rng(12345).normal(size=(feats.shape[1], 10)).astype(np.float32)
        bits = (feats @ planes) > 0  # both operands C-contiguous: BLAS
        # bit i of the bucket is projection i's sign: one BLAS product with the powers of two (exact in float32;
        # shifting and summing the bits in int16 cost more than the rest of the sampling)
        bucket = (bits.view(np.uint8).astype(np.float32) @ (2.0 ** np.arange(10)).astype(np.float32)).astype(np.int16)
        # random order within a bucket, drawn by confidence: a candidate's chance to come early grows with its
        # weight. One sort: the random key, mapped into [0, 0.5), added to the bucket number.
        n_rows = len(feats)
        key = -weight * self._rng.random(n_rows)
        span = float(key.max() - key.min()) if n_rows else 0.0
        order = np.argsort(bucket + (0.5 / max(span, 1e-300)) * (key - key.min()))
        sorted_bucket = bucket[order]
        sizes = np.bincount(bucket, minlength=1024)
        starts = (np.cumsum(sizes) - sizes)[sorted_bucket]
        rank = np.empty(len(feats), np.int64)
        rank[order] = np.arange(len(feats)) - starts
        sizes = np.sort(sizes[sizes > 0])
        # largest quota q with sum(min(size, q)) <= n
        lo, hi = 1, int(sizes[-1])
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if np.minimum(sizes, mid).sum() <= n:
                lo = mid
            else:
                hi = mid - 1
        return np.flatnonzero(rank < lo)

    def _normalise_positions(self, pts: np.ndarray) -> np.ndarray:
        finite = np.isfinite(pts).all(axis=1)
        if finite.any():
            centre = np.median(pts[finite], axis=0)
            spread = float(np.median(np.linalg.norm(pts[finite] - centre, axis=1)))
        else:
            centre, spread = np.zeros(3, np.float32), 1.0
        self._pos_centre, self._pos_scale = centre.astype(np.float32), max(spread, 1e-6)
        pts = np.where(finite[:, None], pts, centre)
        return ((pts - centre) / self._pos_scale).astype(np.float32)

    def _assign_with_position(self, feats: np.ndarray, valid: np.ndarray, protos: np.ndarray,
                              points: np.ndarray) -> np.ndarray:
        """Nearest prototype in (unit feature, weighted normalised position) space; feature distance gates."""
        cfg = self.config
        v, h, w, c = feats.shape
        unit = l2_normalize(feats.reshape(-1, c))
        pts = np.asarray(points, np.float32).reshape(-1, 3)
        pos = (np.where(np.isfinite(pts), pts, self._pos_centre) - self._pos_centre) / self._pos_scale
        x = np.concatenate([unit, cfg.position_weight * pos.astype(np.float32)], axis=1)
        d2 = (x * x).sum(1)[:, None] - 2.0 * (x @ protos.T) + (protos * protos).sum(1)[None, :]
        best = np.argmin(d2, axis=1)
        feature_d2 = 2.0 - 2.0 * np.einsum("ij,ij->i", unit, protos[best, :c])
        labels = (best + 1).astype(np.int32)
        labels[~(feature_d2 <= cfg.max_assign_distance ** 2)] = 0
        labels = labels.reshape(v, h, w)
        labels[~valid] = 0
        return labels

    def _structure(self, labels: np.ndarray, counts: np.ndarray, valid: np.ndarray,
                   points: np.ndarray | None) -> list[int]:
        """Labels that are scene structure: more than ``background_fraction`` of the window's valid pixels and,
        with points, at least half the window's 3D extent (5th-95th percentile box) on a 4-px grid."""
        cfg = self.config
        total_valid = max(int(np.count_nonzero(valid)), 1)
        share = counts[:, 1:].sum(axis=0) / total_valid
        candidates = [int(i + 1) for i in np.flatnonzero(share > cfg.background_fraction)]
        if not candidates or points is None:
            return candidates
        # an 8-px grid: percentiles of a box need a few thousand points, not the 85 k of a 4-px grid
        grid_labels = labels[:, ::8, ::8]
        grid_points = np.asarray(points)[:, ::8, ::8]
        ok = valid[:, ::8, ::8] & np.isfinite(np.einsum("...i,...i->...", grid_points, grid_points))
        all_pts = grid_points[ok]
        if len(all_pts) <= 10:
            return candidates
        lo, hi = np.percentile(all_pts, [5, 95], axis=0)
        window_diag = float(np.linalg.norm(hi - lo))
        background = []
        for lab in candidates:
            pts = grid_points[ok & (grid_labels == lab)]
            if len(pts) < 10:
                continue
            lo, hi = np.percentile(pts, [5, 95], axis=0)
            if float(np.linalg.norm(hi - lo)) >= 0.5 * window_diag:
                background.append(lab)
        return background

    def _clean(self, labels: np.ndarray, protos: np.ndarray, valid: np.ndarray, points: np.ndarray | None,
               min_area_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
        """Drop scene structure, rims and small per-view masks, then renumber 1..K.

        Structure (floor, walls) covers more than ``background_fraction`` of the window's pixels and,
        when points are given, spans at least half the window's 3D extent; a big object close to the
        camera covers as many pixels but is small in 3D.
        """
        cfg = self.config
        v = labels.shape[0]
        k = protos.shape[0]
        # one pass over the window: per-view offsets make (view, label) a single bincount index
        compiled = pixel_kernels.AVAILABLE and labels.dtype == np.int32 and labels.flags.c_contiguous
        if compiled:
            counts = pixel_kernels.label_counts(labels, k + 1)
        else:
            offsets = (np.arange(v, dtype=np.int64) * (k + 1))[:, None, None]
            counts = np.bincount((labels + offsets).ravel(), minlength=v * (k + 1)).reshape(v, k + 1)
        background = self._structure(labels, counts, valid, points)
        # speckle removal after the structure test (speckle is far below its 30 % share) and only on the labels
        # that stay: the floor and walls cover most of every view and would cost most of the labelling
        skip = np.zeros(k + 1, bool)
        skip[background] = True
        removed = drop_small_pieces_window(labels, 0.5 * min_area_px, cfg.min_piece_fraction, skip)[:, : k + 1]
        counts[:, : removed.shape[1]] -= removed
        counts[:, 0] += removed.sum(axis=1)
        # bands along an object's outline (features blurred across the boundary) are no instance of their own
        rim = rims.rim_labels(labels, k, cfg.rim_width_px, skip)
        lut = np.tile(np.arange(k + 1, dtype=np.int32), (v, 1))
        # an instance established in the window (4x the minimum area in total) keeps smaller partial views
        # (down to a quarter of the minimum): an object entering the image is a sliver before it is a mask
        established = counts.sum(axis=0) >= 4 * min_area_px
        per_view_min = np.where(established, min_area_px / 4.0, min_area_px)
        lut[counts < per_view_min[None, :]] = 0
        lut[:, 0] = 0
        lut[:, rim] = 0
        for bg in background:
            lut[:, bg] = 0
        kept = np.zeros(k + 1, bool)
        kept[np.unique(lut)] = True
        kept[0] = False
        renumber = np.zeros(k + 1, np.int32)
        renumber[kept] = np.arange(1, int(kept.sum()) + 1, dtype=np.int32)
        lut = renumber[lut]
        if compiled:
            out = pixel_kernels.relabel(labels, lut)  # in place: the assignment's image is ours
        else:
            out = np.empty_like(labels)
            for i in range(v):
                out[i] = lut[i][labels[i]]
        new_k = int(kept.sum())
        new_counts = np.zeros((v, new_k + 1), np.int64)
        np.add.at(new_counts, (np.repeat(np.arange(v), k + 1), lut.ravel()), counts.ravel())
        return out, protos[kept[1:]], new_counts, background
