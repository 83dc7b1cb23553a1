"""IGGT in PyTorch: architecture, configurations, weights and camera geometry.

Main entry points:
    IggtModelConfig.official() / .parity_fixture() / .tiny()   sizes of a model
    Iggt(config)                                               the model
    Iggt.fix_input_size(H, W)                                  freeze positional tables (export)
    IggtTensorOutputs(model)                                   tensor-tuple outputs for tracing
    checkpoint.load_weights / load_model / save_model          weights in and out
"""

from iggt_ros.model.config import IggtModelConfig
from iggt_ros.model.iggt import OUTPUT_KEYS, Iggt, IggtTensorOutputs

__all__ = ["OUTPUT_KEYS", "Iggt", "IggtModelConfig", "IggtTensorOutputs"]
