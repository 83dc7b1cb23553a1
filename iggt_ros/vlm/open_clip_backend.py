"""open_clip encoders for real deployments: any CLIP model open_clip knows, from a local weights file.

The model name and weights come from `query.open_clip_model` and `query.open_clip_weights`;
nothing is downloaded (the weights file is checked before open_clip is even imported, so a
misconfiguration is reported the same way whether or not the library is installed). The text and
region encoders of one configuration share a single loaded model.

Models whose tokenizer open_clip fetches from the Hugging Face hub need it in the local hub cache
(run with HF_HUB_OFFLINE=1 to make a missing one an error rather than a download); the CLIP
models with open_clip's built-in tokenizer (ViT-B-32, ViT-L-14, ...) need nothing else.

Region side: a square crop around the mask with everything outside the mask replaced by the
image mean colour, resized to the model's input size. Masking (rather than a plain box crop) keeps
neighbouring objects from leaking into an instance's embedding.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from iggt_ros.config import QueryConfig
from iggt_ros.vlm.crop import resize_square
from iggt_ros.vlm.encoders import EncoderUnavailable, RegionEncoder, TextEncoder, normalize_rows
from iggt_ros.vlm.types import RegionCrop

# CLIP's image normalisation (used when the model does not carry its own).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_MODELS: dict[tuple[str, str, str], _OpenClipModel] = {}
_MODELS_LOCK = threading.Lock()


def weights_file(config: QueryConfig) -> Path:
    """The configured local weights file; a clear error naming `query.open_clip_weights` otherwise."""
    if not config.open_clip_weights:
        raise EncoderUnavailable(
            "query.open_clip_weights is empty: the open_clip encoders need a local weights file for "
            f"query.open_clip_model = {config.open_clip_model!r} (nothing is downloaded)")
    path = Path(config.open_clip_weights).expanduser()
    if not path.is_file():
        raise EncoderUnavailable(f"query.open_clip_weights = '{config.open_clip_weights}' does not exist "
                                 f"(resolved to '{path}'); give the path of a local {config.open_clip_model} "
                                 "checkpoint")
    return path


class _OpenClipModel:
    """One loaded open_clip model with its tokenizer and image normalisation."""

    def __init__(self, model_name: str, path: Path, device: str = "cpu"):
        try:
            import open_clip
        except ImportError as exc:
            raise EncoderUnavailable("query.text_encoder/region_encoder = 'open_clip' needs the package "
                                     f"open_clip_torch (pip install 'iggt_ros[clip]'): {exc}") from exc
        try:
            model, _, _ = open_clip.create_model_and_transforms(model_name, pretrained=str(path), device=device)
        except Exception as exc:  # unknown model name, or weights of another architecture
            raise EncoderUnavailable(f"cannot load open_clip model {model_name!r} from "
                                     f"query.open_clip_weights = '{path}': {exc}") from exc
        self.model = model.eval()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.device = device
        size = getattr(model.visual, "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        mean = getattr(model.visual, "image_mean", None) or CLIP_MEAN
        std = getattr(model.visual, "image_std", None) or CLIP_STD
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        with torch.no_grad():
            self.dim = int(model.encode_text(self.tokenizer(["x"]).to(device)).shape[-1])
        self.space = f"open_clip:{model_name}:{path.name}"
        self.lock = threading.Lock()


def _shared_model(config: QueryConfig) -> _OpenClipModel:
    path = weights_file(config)
    key = (config.open_clip_model, str(path.resolve()), "cpu")
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = _OpenClipModel(config.open_clip_model, path)
        return _MODELS[key]


class OpenClipTextEncoder(TextEncoder):
    name = "open_clip"

    def __init__(self, clip: _OpenClipModel):
        self._clip = clip
        self.dim = clip.dim
        self.space = clip.space

    @classmethod
    def from_config(cls, config: QueryConfig) -> OpenClipTextEncoder:
        return cls(_shared_model(config))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        c = self._clip
        with c.lock, torch.no_grad():
            out = c.model.encode_text(c.tokenizer(list(texts)).to(c.device)).float().cpu().numpy()
        return normalize_rows(out)


class OpenClipRegionEncoder(RegionEncoder):
    name = "open_clip"

    def __init__(self, clip: _OpenClipModel, batch_size: int = 16):
        self._clip = clip
        self.dim = clip.dim
        self.space = clip.space
        self._batch = batch_size

    @classmethod
    def from_config(cls, config: QueryConfig) -> OpenClipRegionEncoder:
        return cls(_shared_model(config))

    def _inputs(self, regions: Sequence[RegionCrop]) -> torch.Tensor:
        side = self._clip.image_size
        batch = np.zeros((len(regions), 3, side, side), dtype=np.float32)
        for i, region in enumerate(regions):
            rgb, mask = resize_square(region.rgb, region.mask, side)
            fill = np.asarray(self._clip.mean.view(3).numpy(), dtype=np.float32)
            batch[i] = (rgb * mask[..., None] + fill * (1.0 - mask[..., None])).transpose(2, 0, 1)
        return (torch.from_numpy(batch) - self._clip.mean) / self._clip.std

    def encode(self, regions: Sequence[RegionCrop]) -> np.ndarray:
        regions = list(regions)
        c = self._clip
        out = np.zeros((len(regions), self.dim), dtype=np.float32)
        for start in range(0, len(regions), self._batch):
            x = self._inputs(regions[start:start + self._batch]).to(c.device)
            with c.lock, torch.no_grad():
                out[start:start + len(x)] = c.model.encode_image(x).float().cpu().numpy()
        return normalize_rows(out)
