"""Which weights and which model configuration an `EngineConfig` means.

Kept apart from the backends because every backend (and the exporter) resolves weights the same
way: an empty `engine.checkpoint` means the embedded tiny model shipped in `iggt_ros/data`; a
weights file that carries its configuration (our safetensors) defines its own model; other files
(the official .pt) take the configuration named by `engine.model`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from iggt_ros.engine.base import EngineError

log = logging.getLogger(__name__)

EMBEDDED_WEIGHTS = Path(__file__).resolve().parent.parent / "data" / "tiny_iggt.safetensors"
"""The embedded default model: the tiny IGGT trained on the synthetic scenes (fp16, config in metadata)."""
PRESET_NAMES = ("tiny", "official", "parity")


def model_config(name: str):
    """'tiny', 'official', 'parity' (the parity fixture's size) or a JSON config file -> IggtModelConfig."""
    from iggt_ros.model import IggtModelConfig

    presets = {"tiny": IggtModelConfig.tiny, "official": IggtModelConfig.official,
               "parity": IggtModelConfig.parity_fixture}
    if name in presets:
        return presets[name]()
    path = Path(os.path.expanduser(name))
    if not path.is_file():
        raise EngineError(f"engine.model {name!r} is neither a preset ({', '.join(PRESET_NAMES)}) nor a JSON "
                          "model configuration file")
    try:
        return IggtModelConfig.from_json(path)
    except (ValueError, json.JSONDecodeError) as exc:
        raise EngineError(f"engine.model {name!r}: invalid model configuration ({exc})") from exc


def checkpoint_path(checkpoint: str) -> Path:
    """The weights file `engine.checkpoint` names, or the embedded weights when it is empty; checked to exist."""
    if not checkpoint:
        if not EMBEDDED_WEIGHTS.is_file():
            raise EngineError(
                f"the embedded model weights are missing ({EMBEDDED_WEIGHTS} is not installed); set "
                "engine.checkpoint to a weights file (.safetensors, .pt or .pth), e.g. the official IGGT "
                "checkpoint with engine.model: official")
        return EMBEDDED_WEIGHTS
    path = Path(os.path.expanduser(checkpoint))
    if not path.is_file():
        raise EngineError(f"engine.checkpoint {checkpoint!r} does not exist; give the path of a .safetensors, "
                          ".pt or .pth weights file, or leave it empty for the embedded tiny model")
    return path


def load_engine_model(checkpoint: str, model: str, allow_partial: bool = False):
    """Load the model an `EngineConfig` describes, in float32 on the CPU, in eval mode.

    Returns:
        (Iggt model, IggtModelConfig, weights path).
    Raises:
        EngineError: missing file, unknown configuration, or a checkpoint that does not fit
            (the message names the keys and `engine.allow_partial_checkpoint`).
    """
    from iggt_ros.model.checkpoint import CONFIG_METADATA_KEY, CheckpointError, load_model, read_metadata

    path = checkpoint_path(checkpoint)
    try:
        stored = read_metadata(path).get(CONFIG_METADATA_KEY)
    except Exception as exc:  # a damaged header
        raise EngineError(f"engine.checkpoint {str(path)!r} cannot be read: {exc}") from exc
    config = None
    if stored is None:
        config = model_config(model)
    elif model not in ("tiny", "") and model in PRESET_NAMES:
        from iggt_ros.model import IggtModelConfig

        if IggtModelConfig.from_json(stored) != model_config(model):
            log.warning("engine.model is %r but %s carries another configuration; using the file's", model, path)
    try:
        net, config = load_model(path, config=config, allow_partial=allow_partial)
    except CheckpointError as exc:
        raise EngineError(f"engine.checkpoint {str(path)!r}: {exc} (set engine.allow_partial_checkpoint: true "
                          "only if a partly initialised model is really wanted)") from exc
    return net, config, path


def file_sha256(path: str | Path, memo_dir: str | Path | None = None) -> str:
    """SHA-256 of a file; with `memo_dir`, remembered per (path, size, mtime) so big checkpoints hash once."""
    path = Path(path).resolve()
    stat = path.stat()
    ident = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    memo_file = Path(os.path.expanduser(str(memo_dir))) / "weights_sha256.json" if memo_dir else None
    memo: dict[str, str] = {}
    if memo_file is not None and memo_file.is_file():
        try:
            memo = json.loads(memo_file.read_text())
        except (OSError, json.JSONDecodeError):
            memo = {}
        if ident in memo:
            return memo[ident]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    value = digest.hexdigest()
    if memo_file is not None:
        try:
            memo_file.parent.mkdir(parents=True, exist_ok=True)
            memo[ident] = value
            memo_file.write_text(json.dumps(memo, indent=1, sort_keys=True))
        except OSError:
            pass
    return value
