"""Engine creation for the perception core: one rule for the node, the replay and the CLI.

A window holds `window.size` time steps of every camera, so the engine sees
`window.size x len(input.cameras)` images at once; a TensorRT plan is built and looked up for that
number of views. Asking for `window.size` alone picks the wrong plan profile with several cameras.
"""

from __future__ import annotations

from iggt_ros.config import IggtConfig
from iggt_ros.engine.base import Engine


def window_views(config: IggtConfig) -> int:
    """Images the engine receives per window."""
    return config.window.size * len(config.input.cameras)


def create_window_engine(config: IggtConfig) -> Engine:
    """The engine `config.engine` names, for the model input size and the window's number of views."""
    from iggt_ros.engine.factory import create_engine

    return create_engine(config.engine, input_size=(config.input.image_height, config.input.image_width),
                         window_sizes=(window_views(config),), threads=config.threads)
