"""Start a model of one design from the trained weights of another (warm start across token grids).

The tiny designs share their widths, so most tensors carry over unchanged: the aggregator's blocks,
the camera head, the decoders' projections and fusion blocks. Two depend on the patch side and are
converted: the patch projection (a kernel of side p becomes one of side p/k by summing each k x k
block, so a patch of the new side responds as the old kernel would to that patch enlarged k times),
and the DINO position table (resized to the new grid). The rest (resampling layers of a new scale, a
new image branch) keeps its initialisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from iggt_ros.model.checkpoint import read_state_dict

PATCH_KERNEL = "aggregator.patch_embed.patch_embed.proj.weight"
POS_TABLE = "aggregator.patch_embed.pos_embed"


@dataclass
class TransferReport:
    """Which tensors were copied, converted, or left at their initial values."""

    copied: list[str] = field(default_factory=list)
    converted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return (f"{len(self.copied)} tensors copied, {len(self.converted)} converted ({', '.join(self.converted)}), "
                f"{len(self.kept)} left at their initial values")


def _convert(name: str, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    if name == PATCH_KERNEL and source.shape[:2] == target.shape[:2] and source.shape[-1] % target.shape[-1] == 0:
        k = source.shape[-1] // target.shape[-1]
        return F.avg_pool2d(source.float(), k) * (k * k)
    if name == POS_TABLE and source.shape[-1] == target.shape[-1]:
        side_s, side_t = round((source.shape[1] - 1) ** 0.5), round((target.shape[1] - 1) ** 0.5)
        grid = source[:, 1:].float().reshape(1, side_s, side_s, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(side_t, side_t), mode="bicubic", align_corners=False)
        return torch.cat([source[:, :1].float(), grid.permute(0, 2, 3, 1).reshape(1, side_t * side_t, -1)], 1)
    return None


def transfer_weights(model: torch.nn.Module, source: str | Path | dict) -> TransferReport:
    """Fill `model` with every tensor of `source` that fits as is or after conversion."""
    state = read_state_dict(source) if isinstance(source, (str, Path)) else source
    report = TransferReport()
    own = model.state_dict()
    new = {}
    for name, target in own.items():
        value = state.get(name)
        if value is not None and value.shape == target.shape:
            new[name] = value.to(target.dtype)
            report.copied.append(name)
            continue
        converted = _convert(name, value, target) if value is not None else None
        if converted is not None and converted.shape == target.shape:
            new[name] = converted.to(target.dtype)
            report.converted.append(name)
        else:
            report.kept.append(name)
    model.load_state_dict({**own, **new})
    return report
