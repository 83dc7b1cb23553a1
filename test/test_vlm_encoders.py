"""Encoder plug-ins: the registry, configuration errors, and the open_clip backend where it can run."""

from __future__ import annotations

import os

import numpy as np
import pytest

from iggt_ros.config import ConfigError, IggtConfig, QueryConfig
from iggt_ros.vlm import registry
from iggt_ros.vlm.crop import crop_region
from iggt_ros.vlm.encoders import EncoderUnavailable, RegionEncoder, TextEncoder


def test_none_disables_and_unknown_names_are_listed():
    cfg = QueryConfig(text_encoder="none", region_encoder="none")
    assert registry.make_text_encoder(cfg) is None and registry.make_region_encoder(cfg) is None
    with pytest.raises(EncoderUnavailable, match="query.text_encoder = 'clip9'.*'embedded'.*'open_clip'.*'none'"):
        registry.make_text_encoder(QueryConfig(text_encoder="clip9"))
    with pytest.raises(ConfigError, match="query.region_encoder"):
        IggtConfig().replace(**{"query.region_encoder": "clip9"})


def test_backends_can_be_registered_by_name():
    class Const(TextEncoder):
        name, dim, space = "const", 2, "const"

        def encode(self, texts):
            return np.tile(np.array([[1.0, 0.0]], np.float32), (len(texts), 1))

    registry.register_text_encoder("const", lambda cfg: Const())
    try:
        enc = registry.make_text_encoder(QueryConfig(text_encoder="const"))
        assert isinstance(enc, Const) and enc.encode(["a", "b"]).shape == (2, 2)
        with pytest.raises(EncoderUnavailable, match="'const'"):  # the choices name it
            registry.make_text_encoder(QueryConfig(text_encoder="nope"))
    finally:
        registry._TEXT.pop("const")


@pytest.mark.parametrize("make", [registry.make_text_encoder, registry.make_region_encoder])
def test_open_clip_needs_a_local_weights_file(make, tmp_path):
    with pytest.raises(EncoderUnavailable, match="query.open_clip_weights is empty"):
        make(QueryConfig(text_encoder="open_clip", region_encoder="open_clip"))
    missing = tmp_path / "ViT-B-32.pt"
    with pytest.raises(EncoderUnavailable, match="query.open_clip_weights = '.*ViT-B-32.pt' does not exist"):
        make(QueryConfig(text_encoder="open_clip", region_encoder="open_clip", open_clip_weights=str(missing)))


def test_embedded_weights_path_error_names_the_key(tmp_path):
    with pytest.raises(EncoderUnavailable, match="query.embedded_weights"):
        registry.make_region_encoder(QueryConfig(embedded_weights=str(tmp_path / "nope.safetensors")))


OPEN_CLIP_WEIGHTS = os.environ.get("IGGT_OPEN_CLIP_WEIGHTS", "")
OPEN_CLIP_MODEL = os.environ.get("IGGT_OPEN_CLIP_MODEL", "ViT-B-32")


def _open_clip_ready() -> tuple[bool, str]:
    try:
        import open_clip  # noqa: F401
    except ImportError:
        return False, "open_clip is not installed"
    if not OPEN_CLIP_WEIGHTS or not os.path.isfile(OPEN_CLIP_WEIGHTS):
        return False, "set IGGT_OPEN_CLIP_WEIGHTS to a local open_clip checkpoint to run this test"
    return True, ""


@pytest.mark.skipif(not _open_clip_ready()[0], reason=_open_clip_ready()[1])
def test_open_clip_ranks_a_coloured_region():
    cfg = QueryConfig(text_encoder="open_clip", region_encoder="open_clip", open_clip_model=OPEN_CLIP_MODEL,
                      open_clip_weights=OPEN_CLIP_WEIGHTS)
    text, region = registry.make_text_encoder(cfg), registry.make_region_encoder(cfg)
    assert isinstance(text, TextEncoder) and isinstance(region, RegionEncoder) and text.space == region.space
    rgb = np.full((120, 160, 3), 128, np.uint8)
    red, blue = np.zeros((120, 160), bool), np.zeros((120, 160), bool)
    red[20:60, 10:50] = True
    blue[50:100, 90:140] = True
    rgb[red], rgb[blue] = (220, 20, 20), (20, 30, 220)
    emb = region.encode([crop_region(rgb, red), crop_region(rgb, blue)])
    q = text.encode(["a red square", "a blue square"])
    assert emb.shape == (2, text.dim) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)
    sims = q @ emb.T
    assert sims[0, 0] > sims[0, 1] and sims[1, 1] > sims[1, 0]
