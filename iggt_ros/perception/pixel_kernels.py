"""Compiled (numba) versions of the CPU per-pixel passes: one read of the window per pass instead of several.

numpy spends the per-pixel passes of a window on temporaries: validity squares and sums the points in
three arrays before testing them, the block sums slice, add and take square roots in separate sweeps,
and the coarse-to-fine assignment builds the label image, a refinement index and a gather of the
features to refine. Each sweep reads or writes tens of MB on a 2-core machine whose memory bandwidth is
shared. These kernels do the same arithmetic in float32 in the same order, in one loop each, so
`NumpyPixels` gives the same masks with them as without (test_postprocess_speed holds them equal).
Without numba (a dependency through fast_hdbscan) `AVAILABLE` is False and the numpy code runs.

The kernels over a whole window split its views among numba's threads (``clustering.threads``, 0 = every
core): the passes are independent per view, and on 2 cores they take half the time. Callers run them
inside `parallel_section`, which sets the calling thread's thread count and holds one process-wide lock:
numba's fallback threading layer (workqueue, used when neither OpenMP nor TBB is present) aborts the
process when two threads launch parallel work at once.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Iterator

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - numba comes with fast_hdbscan, a dependency
    numba = None

AVAILABLE = numba is not None

_PARALLEL_LOCK = threading.RLock()


@contextlib.contextmanager
def parallel_section(threads: int = 0) -> Iterator[None]:
    """Run the block's parallel kernels (and fast_hdbscan's) on `threads` numba threads (0 = all), one caller at a
    time in the process."""
    with _PARALLEL_LOCK:
        if numba is not None:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS if threads <= 0
                                  else min(threads, numba.config.NUMBA_NUM_THREADS))
        yield

if numba is not None:

    @numba.njit(cache=True, nogil=True, parallel=True)
    def valid_pixels(depth, points, conf):
        """[V,H,W] finite positive depth, finite points (their squared length too), finite confidence."""
        v, h, w = depth.shape
        out = np.empty((v, h, w), np.bool_)
        for a in numba.prange(v):
            for y in range(h):
                for x in range(w):
                    d = depth[a, y, x]
                    px, py, pz = points[a, y, x, 0], points[a, y, x, 1], points[a, y, x, 2]
                    sq = px * px + py * py + pz * pz
                    out[a, y, x] = (math.isfinite(d) and d > 0 and math.isfinite(sq)
                                    and math.isfinite(conf[a, y, x]))
        return out

    @numba.njit(cache=True, nogil=True, parallel=True)
    def finite_features(feats):
        """[V,H,W] True where the squared length of the pixel's feature is finite (NaN/inf in any channel)."""
        v, h, w, c = feats.shape
        out = np.empty((v, h, w), np.bool_)
        for a in numba.prange(v):
            for y in range(h):
                for x in range(w):
                    sq = np.float32(0.0)
                    for k in range(c):
                        sq += feats[a, y, x, k] * feats[a, y, x, k]
                    out[a, y, x] = math.isfinite(sq)
        return out

    @numba.njit(cache=True, nogil=True, parallel=True)
    def id_image(labels, lut):
        """[V,H,W] uint16 instance IDs: lut[labels] (one lookup table for the window)."""
        v, h, w = labels.shape
        out = np.empty((v, h, w), np.uint16)
        for a in numba.prange(v):
            for y in range(h):
                for x in range(w):
                    out[a, y, x] = lut[labels[a, y, x]]
        return out

    @numba.njit(cache=True, nogil=True, parallel=True)
    def scaled_depth(depth, valid, scale):
        """[V,H,W] float32 depth times `scale` where valid, NaN elsewhere."""
        v, h, w = depth.shape
        out = np.empty((v, h, w), np.float32)
        for a in numba.prange(v):
            for y in range(h):
                for x in range(w):
                    out[a, y, x] = depth[a, y, x] * scale if valid[a, y, x] else np.float32(np.nan)
        return out

    @numba.njit(cache=True, nogil=True, parallel=True)
    def block_stats(feats, valid, block):
        """Per `block` x `block` block, from every second pixel: feature sum, sum of lengths, all reads valid."""
        v, h, w, c = feats.shape
        bh, bw = (h + block - 1) // block, (w + block - 1) // block
        fsum = np.zeros((v, bh, bw, c), np.float32)
        nsum = np.zeros((v, bh, bw), np.float32)
        bvalid = np.ones((v, bh, bw), np.bool_)
        for a in numba.prange(v):
            for by in range(bh):
                for bx in range(bw):
                    for i in range(0, block, 2):
                        y = by * block + i
                        if y >= h:
                            continue
                        for j in range(0, block, 2):
                            x = bx * block + j
                            if x >= w:
                                continue
                            sq = np.float32(0.0)
                            for k in range(c):
                                f = np.float32(feats[a, y, x, k])
                                fsum[a, by, bx, k] += f
                                sq += f * f
                            nsum[a, by, bx] += np.float32(math.sqrt(sq))
                            if not valid[a, y, x]:
                                bvalid[a, by, bx] = False
        return fsum, nsum, bvalid

    @numba.njit(cache=True, nogil=True, parallel=True)
    def block_stats_checked(feats, valid, block):
        """`block_stats` of a window whose sides are multiples of `block`, and whether every feature of every
        pixel is finite, in one pass: the rows the block sums read are loaded whole anyway."""
        v, h, w, c = feats.shape
        bh, bw = h // block, w // block
        fsum = np.zeros((v, bh, bw, c), np.float32)
        nsum = np.zeros((v, bh, bw), np.float32)
        bvalid = np.ones((v, bh, bw), np.bool_)
        finite = np.ones(v, np.bool_)
        for a in numba.prange(v):
            ok = True
            for y in range(h):
                by, read_row = y // block, (y % block) % 2 == 0
                for x in range(w):
                    sq = np.float32(0.0)
                    if read_row and x % 2 == 0:
                        bx = x // block
                        for k in range(c):
                            f = np.float32(feats[a, y, x, k])
                            fsum[a, by, bx, k] += f
                            sq += f * f
                        nsum[a, by, bx] += np.float32(math.sqrt(sq))
                        if not valid[a, y, x]:
                            bvalid[a, by, bx] = False
                    else:
                        for k in range(c):
                            f = np.float32(feats[a, y, x, k])
                            sq += f * f
                    ok = ok and math.isfinite(sq)
            finite[a] = ok
        return fsum, nsum, bvalid, finite.all()

    # no-NaN/no-inf flags are left out: the features reaching these kernels are finite, and the tests below must
    # not be folded away; reassociation lets the short dot products use vector registers
    _FAST = {"reassoc", "contract", "arcp", "nsz"}

    @numba.njit(cache=True, nogil=True, inline="always", fastmath=_FAST)
    def _nearest(row, protos, min_cos):
        """1-based nearest prototype of one feature by raw dot product; 0 below `min_cos` x its length."""
        k_n, c = protos.shape
        if k_n == 0:
            return 0
        sq = np.float32(0.0)
        for k in range(c):
            sq += row[k] * row[k]
        best, top = 0, np.float32(-np.inf)
        for p in range(k_n):
            dot = np.float32(0.0)
            for k in range(c):
                dot += row[k] * protos[p, k]
            if dot > top:
                best, top = p, dot
        if not (top >= min_cos * max(np.float32(math.sqrt(sq)), np.float32(1e-12))):
            return 0
        return best + 1

    @numba.njit(cache=True, nogil=True, parallel=True, fastmath=_FAST)
    def assign_coarse_to_fine(feats, valid, protos, fsum, norm_sum, block_valid, block, min_cos, coherent):
        """Labels [V,H,W]: a coherent block whose label its four neighbours share gives it to all its pixels;
        the pixels of every other block are assigned one by one; invalid pixels are 0. Returns (labels,
        number of refined blocks)."""
        v, h, w, c = feats.shape
        bh, bw = fsum.shape[1], fsum.shape[2]
        block_labels = np.empty((v, bh, bw), np.int32)
        pure = np.empty((v, bh, bw), np.bool_)
        for a in numba.prange(v):
            for by in range(bh):
                for bx in range(bw):
                    row = fsum[a, by, bx]
                    block_labels[a, by, bx] = _nearest(row, protos, min_cos)
                    sq = np.float32(0.0)
                    for k in range(c):
                        sq += row[k] * row[k]
                    pure[a, by, bx] = block_valid[a, by, bx] and \
                        np.float32(math.sqrt(sq)) >= coherent * max(norm_sum[a, by, bx], np.float32(1e-12))
        # -1: refine the block pixel by pixel; otherwise the label all its pixels take
        fill = np.empty((v, bh, bw), np.int32)
        refined = 0
        for a in numba.prange(v):
            for by in range(bh):
                for bx in range(bw):
                    lab = block_labels[a, by, bx]
                    ok = pure[a, by, bx]
                    if ok and by > 0 and block_labels[a, by - 1, bx] != lab:
                        ok = False
                    if ok and by < bh - 1 and block_labels[a, by + 1, bx] != lab:
                        ok = False
                    if ok and bx > 0 and block_labels[a, by, bx - 1] != lab:
                        ok = False
                    if ok and bx < bw - 1 and block_labels[a, by, bx + 1] != lab:
                        ok = False
                    fill[a, by, bx] = lab if ok else -1
                    refined += not ok
        labels = np.empty((v, h, w), np.int32)
        for a in numba.prange(v):
            for by in range(bh):
                for y in range(by * block, min((by + 1) * block, h)):
                    for bx in range(bw):
                        lab = fill[a, by, bx]
                        for x in range(bx * block, min((bx + 1) * block, w)):
                            if not valid[a, y, x]:
                                labels[a, y, x] = 0
                            elif lab >= 0:
                                labels[a, y, x] = lab
                            else:
                                labels[a, y, x] = _nearest(feats[a, y, x], protos, min_cos)
        return labels, refined

    @numba.njit(cache=True, nogil=True, parallel=True)
    def label_counts(labels, k1):
        """[V,K+1] int64 pixels per view and label (labels 0..K of a [V,H,W] int32 window)."""
        v = labels.shape[0]
        flat = labels.reshape(v, -1)
        n = flat.shape[1]
        # four banks of counters, pixel p counting in bank p % 4: neighbouring pixels share a label, and one
        # counter incremented pixel after pixel waits on its own previous store
        banks = np.zeros((v, 4, k1), np.int64)
        for a in numba.prange(v):
            end = n - n % 4
            for p in range(0, end, 4):
                banks[a, 0, flat[a, p]] += 1
                banks[a, 1, flat[a, p + 1]] += 1
                banks[a, 2, flat[a, p + 2]] += 1
                banks[a, 3, flat[a, p + 3]] += 1
            for p in range(end, n):
                banks[a, 0, flat[a, p]] += 1
        return banks.sum(axis=1)

    @numba.njit(cache=True, nogil=True, parallel=True)
    def relabel(labels, lut):
        """labels[a, y, x] = lut[a, labels[a, y, x]] in place: a per-view lookup table over a [V,H,W] int32
        window (in place: a fresh 5.6 MB image costs more in page faults than the lookups)."""
        v = labels.shape[0]
        flat = labels.reshape(v, -1)
        for a in numba.prange(v):
            for p in range(flat.shape[1]):
                flat[a, p] = lut[a, flat[a, p]]
        return labels

    @numba.njit(cache=True, nogil=True)
    def voxel_keys(points, voxel, offset):
        """Packed int64 voxel index per point [N,3] (21 bits per axis, `offset` added, clipped to the range);
        a coordinate no int64 represents (NaN, inf, beyond int64) gives 0, as numpy's conversion followed by
        the clip does on x86 (callers pass finite points)."""
        n = points.shape[0]
        out = np.empty(n, np.int64)
        top = 2 * offset - 1
        for i in range(n):
            key = 0
            for axis in range(3):
                f = math.floor(np.float64(points[i, axis]) / voxel)
                if math.isfinite(f) and abs(f) < 9.2e18:
                    q = np.int64(f) + offset
                    q = 0 if q < 0 else (top if q > top else q)
                else:
                    q = 0
                key = (key << 21) | q
            out[i] = key
        return out

    @numba.njit(cache=True, nogil=True, parallel=True)
    def grid_gather(points, ok, images, labels, step):
        """The valid points of a [V,h,w,3] grid (every `step`-th pixel) with the colour and label of their pixels in
        the full-size [V,H,W,3] images and [V,H,W] labels: (points [N,3], colours [N,3], labels [N]), view-major."""
        v, gh, gw = ok.shape
        counts = np.zeros(v + 1, np.int64)
        for a in numba.prange(v):
            n = 0
            for y in range(gh):
                for x in range(gw):
                    n += ok[a, y, x]
            counts[a + 1] = n
        starts = np.cumsum(counts)
        total = starts[v]
        out_pts = np.empty((total, 3), np.float32)
        out_cols = np.empty((total, 3), np.uint8)
        out_labels = np.empty(total, np.int32)
        for a in numba.prange(v):
            i = starts[a]
            for y in range(gh):
                for x in range(gw):
                    if ok[a, y, x]:
                        for k in range(3):
                            out_pts[i, k] = points[a, y, x, k]
                            out_cols[i, k] = images[a, y * step, x * step, k]
                        out_labels[i] = labels[a, y * step, x * step]
                        i += 1
        return out_pts, out_cols, out_labels

    @numba.njit(cache=True, nogil=True)
    def first_of_each_key(keys):
        """Ascending indices of the first occurrence of each distinct int64 key: one pass through an open-addressing
        table (sorting the keys, as np.unique does, costs more than the rest of the cloud)."""
        n = keys.shape[0]
        bits = 1
        while (1 << bits) < 2 * n:
            bits += 1
        size = 1 << bits
        mask = size - 1
        shift = np.uint64(64 - bits)
        used = np.zeros(size, np.bool_)
        table = np.empty(size, np.int64)
        out = np.empty(n, np.int64)
        count = 0
        for i in range(n):
            key = keys[i]
            # Fibonacci hashing: the top bits of the product mix every bit of the key (voxel keys differ in any)
            slot = np.int64((np.uint64(key) * np.uint64(11400714819323198485)) >> shift)
            while used[slot] and table[slot] != key:
                slot = (slot + 1) & mask
            if not used[slot]:
                used[slot] = True
                table[slot] = key
                out[count] = i
                count += 1
        return out[:count]

    @numba.njit(cache=True, nogil=True)
    def near_any(x, rows, protos, min_cos):
        """For the given rows of [N,D] float32 `x`: is the dot product of its first C columns with some prototype
        [K,C] at least `min_cos` (numpy's max over a short inner axis of the [N,K] products costs ten times more)."""
        k_n, c = protos.shape
        out = np.zeros(rows.shape[0], np.bool_)
        for i in range(rows.shape[0]):
            r = rows[i]
            for p in range(k_n):
                dot = np.float32(0.0)
                for k in range(c):
                    dot += x[r, k] * protos[p, k]
                if dot >= min_cos:
                    out[i] = True
                    break
        return out

    @numba.njit(cache=True, nogil=True)
    def pair_counts(a, b, n_a, n_b):
        """[n_a, n_b] int64 counts of the label pairs (a[y, x], b[y, x]) of two [H,W] label images (any strides);
        labels outside [0, n) are not counted."""
        out = np.zeros((n_a, n_b), np.int64)
        h, w = a.shape
        for y in range(h):
            for x in range(w):
                i, j = a[y, x], b[y, x]
                if 0 <= i < n_a and 0 <= j < n_b:
                    out[i, j] += 1
        return out

    @numba.njit(cache=True, nogil=True)
    def unit_rows(x, rows):
        """float32 unit vectors of the given rows of [N,C] float32 `x`, normalised in float64 (as l2_normalize
        of the float64 rows, then cast): the gather, the cast and the division in one pass."""
        c = x.shape[1]
        out = np.empty((rows.shape[0], c), np.float32)
        for i in range(rows.shape[0]):
            r = rows[i]
            sq = 0.0
            for k in range(c):
                f = np.float64(x[r, k])
                sq += f * f
            norm = max(math.sqrt(sq), 1e-12)
            for k in range(c):
                out[i, k] = np.float32(np.float64(x[r, k]) / norm)
        return out


@functools.cache
def warm_up() -> None:
    """Compile (or load from numba's cache) the kernels for float32 windows now, not in the first window (once per
    process: every pipeline reset builds its components again)."""
    if not AVAILABLE:
        return
    feats = np.zeros((1, 4, 4, 2), np.float32)
    ok = np.ones((1, 4, 4), bool)
    valid_pixels(np.ones((1, 4, 4), np.float32), np.zeros((1, 4, 4, 3), np.float32), np.ones((1, 4, 4), np.float32))
    finite_features(feats)
    id_image(np.zeros((1, 4, 4), np.int32), np.zeros(2, np.uint16))
    scaled_depth(np.ones((1, 4, 4), np.float32), ok, np.float32(1.0))
    fsum, nsum, bvalid = block_stats(feats, ok, 4)
    block_stats_checked(feats, ok, 4)
    labels, _ = assign_coarse_to_fine(feats, ok, np.ones((1, 2), np.float32), fsum, nsum, bvalid, 4,
                                      np.float32(0.8), np.float32(0.95))
    relabel(labels, np.zeros((1, 2), np.int32))
    label_counts(labels, 2)
    voxel_keys(np.zeros((1, 3), np.float32), 0.1, 1 << 20)
    unit_rows(np.ones((2, 2), np.float32), np.zeros(1, np.int64))
    first_of_each_key(np.zeros(3, np.int64))
    pair_counts(labels[0, ::2, ::2], labels[0, ::2, ::2], 2, 2)
    near_any(np.ones((2, 2), np.float32), np.zeros(1, np.int64), np.ones((1, 2), np.float32), np.float32(0.5))
    grid_gather(np.zeros((1, 2, 2, 3), np.float32), np.ones((1, 2, 2), bool), np.zeros((1, 4, 4, 3), np.uint8),
                labels, 2)
