"""Encoders selected by name from `QueryConfig` ('embedded', 'open_clip', 'none').

Backends register a factory under a name; a factory imports its heavy dependencies only when
called, so choosing 'embedded' never imports open_clip and a missing optional library only fails
the backend that needs it. Further backends can register themselves without editing this file.
"""

from __future__ import annotations

from collections.abc import Callable

from iggt_ros.config import QueryConfig
from iggt_ros.vlm.encoders import EncoderUnavailable, RegionEncoder, TextEncoder

TextFactory = Callable[[QueryConfig], TextEncoder]
RegionFactory = Callable[[QueryConfig], RegionEncoder]

_TEXT: dict[str, TextFactory] = {}
_REGION: dict[str, RegionFactory] = {}
DISABLED = "none"


def register_text_encoder(name: str, factory: TextFactory) -> None:
    """Make `factory` available as `query.text_encoder: <name>`."""
    _TEXT[name] = factory


def register_region_encoder(name: str, factory: RegionFactory) -> None:
    """Make `factory` available as `query.region_encoder: <name>`."""
    _REGION[name] = factory


def make_text_encoder(config: QueryConfig) -> TextEncoder | None:
    """The text encoder named by `config.text_encoder`; None when queries are disabled ('none')."""
    return _make(_TEXT, config.text_encoder, "query.text_encoder", config)


def make_region_encoder(config: QueryConfig) -> RegionEncoder | None:
    """The region encoder named by `config.region_encoder`; None when embedding is disabled ('none')."""
    return _make(_REGION, config.region_encoder, "query.region_encoder", config)


def _make(table: dict, name: str, key: str, config: QueryConfig):
    if name == DISABLED:
        return None
    if name not in table:
        raise EncoderUnavailable(f"{key} = {name!r} is not a known encoder; choose from "
                                 + ", ".join(repr(n) for n in sorted(table) + [DISABLED]))
    return table[name](config)


def _embedded_text(config: QueryConfig) -> TextEncoder:
    from iggt_ros.vlm.embedded import EmbeddedTextEncoder

    return EmbeddedTextEncoder.from_config(config)


def _embedded_region(config: QueryConfig) -> RegionEncoder:
    from iggt_ros.vlm.embedded import EmbeddedRegionEncoder

    return EmbeddedRegionEncoder.from_config(config)


def _open_clip_text(config: QueryConfig) -> TextEncoder:
    from iggt_ros.vlm.open_clip_backend import OpenClipTextEncoder

    return OpenClipTextEncoder.from_config(config)


def _open_clip_region(config: QueryConfig) -> RegionEncoder:
    from iggt_ros.vlm.open_clip_backend import OpenClipRegionEncoder

    return OpenClipRegionEncoder.from_config(config)


register_text_encoder("embedded", _embedded_text)
register_region_encoder("embedded", _embedded_region)
register_text_encoder("open_clip", _open_clip_text)
register_region_encoder("open_clip", _open_clip_region)
