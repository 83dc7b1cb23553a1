"""Per-pixel work of a window (validity, block sums, prototype assignment, cloud packing) on numpy or a torch device.

A window of 8 views at 504x336 holds 1.4 M pixels with 8-D features: every pass over them reads
43 MB. Everything else the post-processing does runs on a few thousand samples or a point grid, so
these passes decide its cost. When the engine runs on a CUDA GPU the features come from there, and
the same passes can run there too: `TorchPixels` is the torch version of every operation of
`NumpyPixels`, written op for op after it so that the two give the same labels (tests hold them
equal on the CPU device). On a CPU numpy is the faster of the two for these memory-bound passes
(torch's reductions over an inner axis of 8 are several times slower), so `auto` picks CUDA when
PyTorch sees a GPU and numpy otherwise.

Assignment is coarse to fine: the window is cut into ``block`` x ``block`` pixel blocks whose
features are summed from every second pixel; a block that is coherent (its reads agree) and has the
same nearest prototype as its four neighbours (or, like them, none within reach) gives that label to
all its pixels, and only the other blocks (instance boundaries, noise, invalid pixels) are assigned
pixel by pixel. The exact mode
assigns every pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from iggt_ros.perception import pixel_kernels

_EPS = 1e-12
COHERENT_BLOCK = 0.95
"""A block whose summed reads keep this fraction of their summed lengths is coherent (one direction)."""


@dataclass
class BlockStats:
    """Per block of one window, from every second pixel: what the sampler and the coarse assignment read."""

    sum: np.ndarray
    """[V,bh,bw,C] float32 sum of the block's reads (numpy, whatever the device)."""
    norm_sum: np.ndarray
    """[V,bh,bw] float32 sum of the reads' lengths."""
    valid: np.ndarray
    """[V,bh,bw] bool: every read of the block is valid."""
    device_sum: Any = None
    """The same sums on the device (torch tensor), so the assignment need not upload them again."""


def min_cosine(max_assign_distance: float) -> float:
    """Smallest cosine to a prototype that counts as near: ||f/|f| - p||^2 = 2 - 2 cos."""
    return 1.0 - 0.5 * max_assign_distance ** 2


def refine_pixels(blocks: np.ndarray, shape: tuple[int, int, int], block: int) -> np.ndarray:
    """Flat pixel indices of the given flat block indices (every pixel of each block), without full-size masks."""
    v, h, w = shape
    bw = w // block
    vi, rem = np.divmod(blocks.astype(np.int64), (h // block) * bw)
    by, bx = np.divmod(rem, bw)
    base = vi * (h * w) + by * (block * w) + bx * block
    inside = (np.arange(block)[:, None] * w + np.arange(block)[None, :]).ravel()
    return (base[:, None] + inside[None, :]).ravel()


def _f32(*arrays: np.ndarray) -> bool:
    return all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in arrays)


class NumpyPixels:
    """The per-pixel passes in numpy (the CPU path); with numba, validity, block sums and the coarse-to-fine
    assignment of float32 windows run as compiled single-pass kernels (pixel_kernels.py) giving the same results."""

    name = "numpy"

    def __init__(self, compiled: bool = True) -> None:
        self.compiled = compiled and pixel_kernels.AVAILABLE
        if self.compiled:
            pixel_kernels.warm_up()

    def prepare(self, feats: np.ndarray) -> np.ndarray:
        """The window's features where this backend computes on them (numpy: as given)."""
        return feats

    def finite(self, feats: np.ndarray) -> np.ndarray:
        """[V,H,W] True where every feature channel is finite (NaN/inf propagate through the dot product)."""
        if self.compiled and _f32(feats) and feats.ndim == 4:
            return pixel_kernels.finite_features(np.ascontiguousarray(feats))
        flat = feats.reshape(-1)
        if flat.size and np.isfinite(np.dot(flat, flat)):  # one BLAS pass settles the usual case
            return np.ones(feats.shape[:3], bool)
        return np.isfinite(np.einsum("...i,...i->...", feats, feats))

    def valid_pixels(self, depth: np.ndarray, points: np.ndarray, conf: np.ndarray) -> np.ndarray:
        """[V,H,W] pixels with finite positive depth, finite points and finite confidence."""
        if self.compiled and _f32(depth, points, conf) and points.ndim == 4:
            return pixel_kernels.valid_pixels(np.ascontiguousarray(depth), np.ascontiguousarray(points),
                                              np.ascontiguousarray(conf))
        sq = np.einsum("...i,...i->...", points, points)
        return np.isfinite(depth) & (depth > 0) & np.isfinite(sq) & np.isfinite(conf)

    def block_stats(self, feats: np.ndarray, valid: np.ndarray, block: int) -> BlockStats:
        """Strided slices added together: numpy reductions over small inner axes are several times slower."""
        if self.compiled and _f32(feats):
            fsum, nsum, bvalid = pixel_kernels.block_stats(np.ascontiguousarray(feats),
                                                           np.ascontiguousarray(valid, dtype=bool), block)
            return BlockStats(fsum, nsum, bvalid)
        fsum = np.zeros(feats[:, ::block, ::block].shape, np.float32)
        nsum = np.zeros(fsum.shape[:3], np.float32)
        bvalid = np.ones(fsum.shape[:3], bool)
        for i in range(0, block, 2):
            for j in range(0, block, 2):
                part = feats[:, i::block, j::block]
                fsum += part
                nsum += np.sqrt(np.einsum("...i,...i->...", part, part))
                bvalid &= valid[:, i::block, j::block]
        return BlockStats(fsum, nsum, bvalid)

    def block_stats_if_finite(self, feats: np.ndarray, valid: np.ndarray, block: int) -> BlockStats | None:
        """The block stats when every feature of the window is finite, checked in the same pass; None when some
        is not, or when this backend cannot check in one pass (the caller then checks first)."""
        v, h, w, _ = feats.shape
        if not (self.compiled and _f32(feats) and h % block == 0 and w % block == 0):
            return None
        fsum, nsum, bvalid, finite = pixel_kernels.block_stats_checked(
            np.ascontiguousarray(feats), np.ascontiguousarray(valid, dtype=bool), block)
        return BlockStats(fsum, nsum, bvalid) if finite else None

    def assign(self, flat: np.ndarray, protos: np.ndarray, min_cos: float) -> np.ndarray:
        """Nearest prototype (1-based) per row of raw features, 0 when the cosine is below `min_cos`."""
        if flat.shape[0] == 0 or protos.shape[0] == 0:
            return np.zeros(flat.shape[0], np.int32)
        # argmax of cosine = argmax of the raw dot product; a C-contiguous right operand keeps the product in
        # BLAS (numpy's own loop for a transposed view is ten times slower)
        dots = flat @ np.ascontiguousarray(protos.T, dtype=np.float32)
        best = np.argmax(dots, axis=1)
        top = np.take_along_axis(dots, best[:, None], axis=1)[:, 0]
        norm = np.sqrt(np.einsum("ij,ij->i", flat, flat))
        labels = (best + 1).astype(np.int32)
        labels[~(top >= min_cos * np.maximum(norm, _EPS))] = 0
        return labels

    def assign_exact(self, feats: np.ndarray, valid: np.ndarray, protos: np.ndarray, min_cos: float) -> np.ndarray:
        v, h, w, c = feats.shape
        labels = self.assign(feats.reshape(-1, c), protos, min_cos).reshape(v, h, w)
        labels[~valid] = 0
        return labels

    def assign_coarse_to_fine(self, feats: np.ndarray, valid: np.ndarray, protos: np.ndarray, blocks: BlockStats,
                              block: int, min_cos: float) -> np.ndarray:
        v, h, w, c = feats.shape
        fsum = blocks.sum
        if self.compiled and _f32(feats) and h % block == 0 and w % block == 0:
            labels, _ = pixel_kernels.assign_coarse_to_fine(
                np.ascontiguousarray(feats), np.ascontiguousarray(valid, dtype=bool),
                np.ascontiguousarray(protos, dtype=np.float32), np.ascontiguousarray(fsum, dtype=np.float32),
                np.ascontiguousarray(blocks.norm_sum, dtype=np.float32), np.ascontiguousarray(blocks.valid),
                block, np.float32(min_cos), np.float32(COHERENT_BLOCK))
            return labels
        bh, bw = fsum.shape[1:3]
        block_labels = self.assign(fsum.reshape(-1, c), protos, min_cos).reshape(v, bh, bw)
        length = np.sqrt(np.einsum("...i,...i->...", fsum, fsum))
        # a coherent block far from every prototype, among neighbours that are too, stays 0 without refinement
        pure = blocks.valid & (length >= COHERENT_BLOCK * np.maximum(blocks.norm_sum, _EPS))
        pure[:, 1:, :] &= block_labels[:, 1:, :] == block_labels[:, :-1, :]
        pure[:, :-1, :] &= block_labels[:, :-1, :] == block_labels[:, 1:, :]
        pure[:, :, 1:] &= block_labels[:, :, 1:] == block_labels[:, :, :-1]
        pure[:, :, :-1] &= block_labels[:, :, :-1] == block_labels[:, :, 1:]
        labels = np.empty((v, bh, block, bw, block), np.int32)
        labels[...] = (block_labels * pure)[:, :, None, :, None]
        labels = labels.reshape(v, h, w)
        idx = refine_pixels(np.flatnonzero(~pure), (v, h, w), block)
        labels.reshape(-1)[idx] = self.assign(feats.reshape(-1, c)[idx], protos, min_cos)
        if not valid.all():
            labels[~valid] = 0
        return labels

    def id_image(self, labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
        """[V,H,W] uint16 instance IDs of window-local labels through one lookup table."""
        if self.compiled and labels.dtype == np.int32 and lut.dtype == np.uint16:
            return pixel_kernels.id_image(np.ascontiguousarray(labels), lut)
        return lut[labels].astype(np.uint16)

    def scaled_depth(self, depth: np.ndarray, valid: np.ndarray, scale: float) -> np.ndarray:
        """[V,H,W] float32 depth times `scale` where valid, NaN elsewhere (the published depth)."""
        if self.compiled and _f32(depth):
            return pixel_kernels.scaled_depth(np.ascontiguousarray(depth), np.ascontiguousarray(valid, dtype=bool),
                                              np.float32(scale))
        return np.where(valid, depth * np.float32(scale), np.nan).astype(np.float32)

    def pack_cloud_columns(self, points: np.ndarray, colors: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """[N,5] uint32 words of the CLOUD_DTYPE layout: x, y, z float32 bits, 0x00RRGGBB, instance ID."""
        out = np.empty((len(points), 5), np.uint32)
        out[:, :3] = np.ascontiguousarray(points, np.float32).view(np.uint32)
        c = np.asarray(colors).astype(np.uint32)
        out[:, 3] = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
        out[:, 4] = ids
        return out


class TorchPixels:
    """The same passes as `NumpyPixels` in torch on `device` (a CUDA GPU next to the engine, or the CPU in tests)."""

    def __init__(self, device: str = "cpu") -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"clustering.pixel_device is {device!r} but PyTorch sees no CUDA device: "
                             "use 'auto', 'numpy' or 'cpu'")
        self.name = f"torch-{self.device}"

    def _t(self, x: Any):
        torch = self.torch
        if isinstance(x, torch.Tensor):
            return x.to(self.device)
        return torch.from_numpy(np.ascontiguousarray(x)).to(self.device)

    @staticmethod
    def _np(x) -> np.ndarray:
        return x.detach().cpu().numpy()

    def prepare(self, feats: np.ndarray):
        """Upload the window's features once; every later pass reads the device copy."""
        return self._t(np.asarray(feats, np.float32))

    def finite(self, feats) -> np.ndarray:
        f = self._t(feats)
        return self._np(self.torch.isfinite((f * f).sum(-1)))

    def valid_pixels(self, depth: np.ndarray, points: np.ndarray, conf: np.ndarray) -> np.ndarray:
        torch = self.torch
        d, p, c = self._t(depth), self._t(points), self._t(conf)
        ok = torch.isfinite(d) & (d > 0) & torch.isfinite((p * p).sum(-1)) & torch.isfinite(c)
        return self._np(ok)

    def block_stats_if_finite(self, feats, valid: np.ndarray, block: int) -> None:
        """Not in one pass here: the caller checks finiteness first."""
        return None

    def block_stats(self, feats, valid: np.ndarray, block: int) -> BlockStats:
        torch = self.torch
        f = self._t(feats)
        vt = self._t(valid)
        fsum = torch.zeros_like(f[:, ::block, ::block])
        nsum = torch.zeros(fsum.shape[:3], dtype=f.dtype, device=f.device)
        bvalid = torch.ones(fsum.shape[:3], dtype=torch.bool, device=f.device)
        for i in range(0, block, 2):
            for j in range(0, block, 2):
                part = f[:, i::block, j::block]
                fsum += part
                nsum += torch.sqrt((part * part).sum(-1))
                bvalid &= vt[:, i::block, j::block]
        return BlockStats(self._np(fsum), self._np(nsum), self._np(bvalid), device_sum=fsum)

    def _assign(self, flat, protos, min_cos: float):
        torch = self.torch
        if flat.shape[0] == 0 or protos.shape[0] == 0:
            return torch.zeros(flat.shape[0], dtype=torch.int32, device=self.device)
        dots = flat @ protos.T
        top, best = dots.max(dim=1)
        norm = torch.sqrt((flat * flat).sum(-1))
        labels = (best + 1).to(torch.int32)
        labels[~(top >= min_cos * norm.clamp_min(_EPS))] = 0
        return labels

    def assign(self, flat, protos: np.ndarray, min_cos: float) -> np.ndarray:
        return self._np(self._assign(self._t(flat), self._t(np.asarray(protos, np.float32)), min_cos))

    def assign_exact(self, feats, valid: np.ndarray, protos: np.ndarray, min_cos: float) -> np.ndarray:
        f = self._t(feats)
        v, h, w, c = f.shape
        labels = self._assign(f.reshape(-1, c), self._t(np.asarray(protos, np.float32)), min_cos).reshape(v, h, w)
        labels[~self._t(valid)] = 0
        return self._np(labels)

    def assign_coarse_to_fine(self, feats, valid: np.ndarray, protos: np.ndarray, blocks: BlockStats,
                              block: int, min_cos: float) -> np.ndarray:
        torch = self.torch
        f = self._t(feats)
        v, h, w, c = f.shape
        p = self._t(np.asarray(protos, np.float32))
        fsum = blocks.device_sum if blocks.device_sum is not None else self._t(blocks.sum)
        bh, bw = fsum.shape[1:3]
        block_labels = self._assign(fsum.reshape(-1, c), p, min_cos).reshape(v, bh, bw)
        length = torch.sqrt((fsum * fsum).sum(-1))
        pure = self._t(blocks.valid) & (length >= COHERENT_BLOCK * self._t(blocks.norm_sum).clamp_min(_EPS))
        same = torch.ones_like(pure)
        same[:, 1:, :] &= block_labels[:, 1:, :] == block_labels[:, :-1, :]
        same[:, :-1, :] &= block_labels[:, :-1, :] == block_labels[:, 1:, :]
        same[:, :, 1:] &= block_labels[:, :, 1:] == block_labels[:, :, :-1]
        same[:, :, :-1] &= block_labels[:, :, :-1] == block_labels[:, :, 1:]
        pure &= same
        labels = (block_labels * pure)[:, :, None, :, None].expand(v, bh, block, bw, block).reshape(v, h, w)
        labels = labels.contiguous()
        refine = (~pure)[:, :, None, :, None].expand(v, bh, block, bw, block).reshape(-1)
        idx = torch.nonzero(refine, as_tuple=True)[0]
        flat_labels = labels.view(-1)
        flat_labels[idx] = self._assign(f.reshape(-1, c)[idx], p, min_cos)
        labels[~self._t(valid)] = 0
        return self._np(labels)

    def id_image(self, labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
        table = self._t(np.asarray(lut, np.int32))
        return self._np(table[self._t(labels).long()]).astype(np.uint16)

    def scaled_depth(self, depth: np.ndarray, valid: np.ndarray, scale: float) -> np.ndarray:
        torch = self.torch
        d = self._t(np.asarray(depth, np.float32))
        out = torch.where(self._t(valid), d * np.float32(scale), torch.full_like(d, float("nan")))
        return self._np(out)

    def pack_cloud_columns(self, points: np.ndarray, colors: np.ndarray, ids: np.ndarray) -> np.ndarray:
        torch = self.torch
        out = torch.empty((len(points), 5), dtype=torch.int32, device=self.device)
        out[:, :3] = self._t(np.asarray(points, np.float32)).contiguous().view(torch.int32)
        c = self._t(np.asarray(colors, np.uint8)).to(torch.int32)
        out[:, 3] = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
        out[:, 4] = self._t(np.asarray(ids, np.uint32).view(np.int32))
        return self._np(out).view(np.uint32)


PixelOps = NumpyPixels | TorchPixels


def resolve_pixel_device(name: str) -> str:
    """'auto' -> 'cuda' when PyTorch sees a CUDA device, else 'numpy'; anything else as given."""
    if name != "auto":
        return name
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency; a stripped install still runs on numpy
        return "numpy"
    return "cuda" if torch.cuda.is_available() else "numpy"


def make_pixel_ops(name: str = "auto") -> PixelOps:
    """The backend for clustering.pixel_device: 'auto', 'numpy', or a torch device ('cpu', 'cuda', 'cuda:N')."""
    resolved = resolve_pixel_device(name)
    if resolved == "numpy":
        return NumpyPixels()
    return TorchPixels(resolved)
