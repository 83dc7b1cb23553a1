"""Reading, checking, converting and writing IGGT weights.

A model must never run half loaded: every model key missing from a checkpoint, every
checkpoint key the model does not know and every shape mismatch is reported by name, and the
load is refused unless the caller explicitly allows a partial load. The only exception are the
parameter groups the forward pass never reads (the point-track head of official checkpoints, which
the package does not build; the part head's inherited DPT layers, the dead cross-attention, the
DINO mask token): they may be absent on either side.

Our own weight files are safetensors with the model configuration in their metadata, so a file
alone rebuilds its model (`save_model` / `load_model`).

Also the `iggt-ros convert-checkpoint` command (`add_arguments`, `run`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from iggt_ros.model.config import IggtModelConfig
from iggt_ros.model.iggt import Iggt

KNOWN_UNUSED_PREFIXES = (
    "track_head.",
    "part_head.norm.",
    "part_head.projects.",
    "part_head.resize_layers.",
    "part_head.cross_attention_1.",
    "aggregator.patch_embed.mask_token",
)
"""Groups that never contribute to the outputs; they may be absent from the model or the checkpoint."""

CONFIG_METADATA_KEY = "iggt_model_config"
FORMAT_METADATA_KEY = "format"
FORMAT_NAME = "iggt_ros.model/1"
LIST_LIMIT = 20


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read, or does not fit the model."""


def is_known_unused(key: str) -> bool:
    return key.startswith(KNOWN_UNUSED_PREFIXES)


@dataclass
class LoadReport:
    """What a load did: offending keys by kind, and the harmless differences it ignored."""

    missing: list[str] = field(default_factory=list)
    """Model keys absent from the checkpoint (left at their initial values)."""
    unexpected: list[str] = field(default_factory=list)
    """Checkpoint keys the model does not have."""
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    """(key, checkpoint shape, model shape)."""
    ignored: list[str] = field(default_factory=list)
    """Known-unused keys that were absent, extra or differently shaped."""
    loaded: int = 0

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        """Human-readable list of the offending keys (first 20 of each kind plus counts)."""
        parts = []
        for title, items in (
            ("missing from the checkpoint", self.missing),
            ("unexpected in the checkpoint", self.unexpected),
            ("shape mismatch (checkpoint vs model)", [f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in self.mismatched]),
        ):
            if items:
                shown = ", ".join(items[:LIST_LIMIT])
                more = f" ... and {len(items) - LIST_LIMIT} more" if len(items) > LIST_LIMIT else ""
                parts.append(f"{len(items)} {title}: {shown}{more}")
        return "; ".join(parts) if parts else "all keys matched"


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def _unwrap(obj: object, source: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                return _unwrap(obj[wrapper], source)
        if all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return dict(obj)
    raise CheckpointError(
        f"{source} does not hold a state dict (a mapping of names to tensors, optionally under 'model' or 'state_dict')"
    )


def strip_module_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove one leading 'module.' (left by DistributedDataParallel) from every key."""
    return {k.removeprefix("module."): v for k, v in state.items()}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a .pt/.pth (torch.load, tensors only) or .safetensors file into a CPU state dict.

    Accepts a bare state dict or one wrapped under 'model' / 'state_dict'; strips 'module.'.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return strip_module_prefix(load_file(str(path)))
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(
                f"cannot read {path} as a tensors-only torch checkpoint ({exc}); "
                "re-save it as a plain state dict or safetensors"
            ) from exc
        return strip_module_prefix(_unwrap(obj, str(path)))
    raise CheckpointError(f"unsupported checkpoint type {path.suffix!r} ({path}); use .pt, .pth or .safetensors")


def read_metadata(path: str | Path) -> dict[str, str]:
    """safetensors header metadata (empty for other formats)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


# ---------------------------------------------------------------------------------------------
# Checking and loading
# ---------------------------------------------------------------------------------------------
def compare_state_dicts(
    model_shapes: Mapping[str, tuple[int, ...]], checkpoint: Mapping[str, torch.Tensor]
) -> LoadReport:
    """Classify every key of a model (name -> shape) against a checkpoint."""
    report = LoadReport()
    for key, shape in model_shapes.items():
        if key not in checkpoint:
            (report.ignored if is_known_unused(key) else report.missing).append(key)
        elif tuple(checkpoint[key].shape) != tuple(shape):
            if is_known_unused(key):
                report.ignored.append(key)
            else:
                report.mismatched.append((key, tuple(checkpoint[key].shape), tuple(shape)))
        else:
            report.loaded += 1
    for key in checkpoint:
        if key not in model_shapes:
            (report.ignored if is_known_unused(key) else report.unexpected).append(key)
    report.missing.sort()
    report.unexpected.sort()
    report.mismatched.sort()
    report.ignored.sort()
    return report


def load_weights(
    model: torch.nn.Module,
    source: str | Path | Mapping[str, torch.Tensor],
    allow_partial: bool = False,
) -> LoadReport:
    """Load weights into `model`, refusing a partial or mismatched load unless allowed.

    Args:
        model: the model to fill (usually an `Iggt`).
        source: a checkpoint path (.pt/.pth/.safetensors) or a state dict.
        allow_partial: load the matching keys even when others are missing, unexpected or
            mismatched (those stay at their initial values). Use only on purpose, e.g. to
            fine-tune from a differently sized model.

    Returns:
        The `LoadReport` of the load.

    Raises:
        CheckpointError: the checkpoint cannot be read, or it does not fit and
            `allow_partial` is False; the message names the offending keys.
    """
    label = str(source) if isinstance(source, (str, Path)) else "state dict"
    state = read_state_dict(source) if isinstance(source, (str, Path)) else strip_module_prefix(source)
    model_state = model.state_dict()
    report = compare_state_dicts({k: tuple(v.shape) for k, v in model_state.items()}, state)
    if not report.complete and not allow_partial:
        raise CheckpointError(
            f"checkpoint {label} does not fit the model: {report.describe()}. "
            "Check that the model configuration matches the checkpoint, or pass allow_partial=True "
            "(command line: --allow-partial) to load only the matching keys and leave the rest at "
            "their initial values."
        )
    usable = {k: v for k, v in state.items() if k in model_state and tuple(v.shape) == tuple(model_state[k].shape)}
    model.load_state_dict(usable, strict=False)
    return report


# ---------------------------------------------------------------------------------------------
# Our own files: safetensors with the configuration in the metadata
# ---------------------------------------------------------------------------------------------
def _contiguous(state: Mapping[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        out[key] = value.contiguous()
    return out


def save_state_dict(
    state: Mapping[str, torch.Tensor],
    path: str | Path,
    config: IggtModelConfig | None = None,
    dtype: torch.dtype | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a state dict as safetensors, with the model configuration in the metadata.

    Args:
        dtype: cast floating-point tensors (e.g. torch.float16 for shipped weights); integer
            buffers keep their type.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {FORMAT_METADATA_KEY: FORMAT_NAME, **(metadata or {})}
    if config is not None:
        meta[CONFIG_METADATA_KEY] = config.to_json()
    save_file(_contiguous(state, dtype), str(path), metadata=meta)
    return path


def save_model(model: Iggt, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write a model's weights and configuration to one safetensors file (dtype e.g. torch.float16)."""
    return save_state_dict(model.state_dict(), path, model.config, dtype)


def load_model(
    path: str | Path,
    config: IggtModelConfig | None = None,
    device: str | torch.device = "cpu",
    allow_partial: bool = False,
) -> tuple[Iggt, IggtModelConfig]:
    """Rebuild a model from a weights file, in eval mode and float32.

    Args:
        path: a safetensors file written by `save_model` / `convert` (configuration in its
            metadata), or any checkpoint when `config` is given.
        config: overrides the stored configuration; required for files without one.
        device: where to put the model.
        allow_partial: see `load_weights`.

    Returns:
        (model, config).
    """
    if config is None:
        stored = read_metadata(path).get(CONFIG_METADATA_KEY)
        if stored is None:
            raise CheckpointError(
                f"{path} carries no model configuration; pass config= (e.g. IggtModelConfig.official())"
            )
        config = IggtModelConfig.from_json(stored)
    model = Iggt(config)
    load_weights(model, path, allow_partial=allow_partial)
    return model.to(device).eval(), config


def convert(
    source: str | Path,
    destination: str | Path,
    config: IggtModelConfig | None = None,
    dtype: torch.dtype | None = None,
    allow_partial: bool = False,
) -> LoadReport:
    """Convert a checkpoint (e.g. the official .pt) to our safetensors format.

    The keys are checked against the model layout of `config` (default: the official model)
    without allocating the model, and the configuration is stored in the output metadata.
    Known-unused groups the checkpoint lacks stay absent; `load_model` accepts that.
    """
    config = config or IggtModelConfig.official()
    state = read_state_dict(source)
    with torch.device("meta"):
        layout = {k: tuple(v.shape) for k, v in Iggt(config).state_dict().items()}
    report = compare_state_dicts(layout, state)
    if not report.complete and not allow_partial:
        raise CheckpointError(
            f"{source} does not fit the model configuration: {report.describe()}. "
            "Pass --config for another model size, or --allow-partial to convert anyway."
        )
    kept = {k: v for k, v in state.items() if k in layout and tuple(v.shape) == layout[k]}
    save_state_dict(kept, destination, config, dtype, {"source": Path(source).name})
    return report


# ---------------------------------------------------------------------------------------------
# Command line: iggt-ros convert-checkpoint
# ---------------------------------------------------------------------------------------------
PRESETS = {
    "official": IggtModelConfig.official,
    "parity": IggtModelConfig.parity_fixture,
    "tiny": IggtModelConfig.tiny,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="checkpoint to convert (.pt, .pth or .safetensors)")
    parser.add_argument("destination", help="output .safetensors file")
    parser.add_argument(
        "--config", default="official",
        help="model configuration: official, parity, tiny, or a JSON file (default: official)",
    )
    parser.add_argument("--fp16", action="store_true", help="store floating-point weights as float16")
    parser.add_argument("--allow-partial", action="store_true",
                        help="convert even when keys are missing, unexpected or mismatched")


def run(args: argparse.Namespace) -> int:
    config = PRESETS[args.config]() if args.config in PRESETS else IggtModelConfig.from_json(Path(args.config))
    if not str(args.destination).endswith(".safetensors"):
        print("iggt-ros convert-checkpoint: destination must end in .safetensors", file=sys.stderr)
        return 2
    try:
        report = convert(args.source, args.destination, config,
                         torch.float16 if args.fp16 else None, args.allow_partial)
    except CheckpointError as exc:
        print(f"iggt-ros convert-checkpoint: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.destination}: {report.loaded} tensors; {report.describe()}")
    if report.ignored:
        print(f"known-unused keys absent or skipped ({len(report.ignored)}): "
              + json.dumps(report.ignored[:LIST_LIMIT]))
    return 0
