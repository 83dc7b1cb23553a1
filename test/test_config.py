"""Configuration: defaults, YAML in/out, ROS parameter layout, validation messages."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from iggt_ros.config import ConfigError, IggtConfig, config_from_document, load_config, save_config

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_valid_and_use_the_demo_size():
    cfg = IggtConfig().validate()
    assert (cfg.input.image_width, cfg.input.image_height) == (504, 336)
    assert cfg.input.image_width % 28 == 0 and cfg.input.image_height % 28 == 0


def test_shipped_parameter_file_lists_every_key_and_loads():
    path = REPO / "config" / "iggt.yaml"
    cfg = load_config(path)
    import yaml

    doc = yaml.safe_load(path.read_text())
    params = doc["iggt_node"]["ros__parameters"]
    listed = {f"{section}.{key}" for section, values in params.items() for key in values}
    assert listed == set(IggtConfig().to_flat()), "config/iggt.yaml must document every key"
    assert cfg.to_flat() == IggtConfig().to_flat(), "config/iggt.yaml must hold the defaults"


def test_save_and_load_round_trip(tmp_path):
    cfg = IggtConfig().replace(**{"window.size": 4, "window.stride": 2, "input.cameras": ["left", "right"]})
    save_config(cfg, tmp_path / "p.yaml")
    again = load_config(tmp_path / "p.yaml")
    assert again == cfg
    assert again.window.size == 4 and again.input.cameras == ["left", "right"]


def test_namespaced_and_dotted_parameter_files_are_understood():
    doc = {"robot": {"iggt_node": {"ros__parameters": {"window.size": 6, "input": {"image_width": 560}}}}}
    cfg = config_from_document(doc)
    assert cfg.window.size == 6 and cfg.input.image_width == 560
    wildcard = {"/**": {"ros__parameters": {"tracking": {"lost_windows": 5}}}}
    assert config_from_document(wildcard).tracking.lost_windows == 5


def test_flat_round_trip_matches_ros_parameter_names():
    cfg = IggtConfig()
    flat = cfg.to_flat()
    assert "window.size" in flat and "engine.backend" in flat
    assert IggtConfig.from_flat(flat) == cfg


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("input.image_width", 500, "multiple of 28"),
        ("input.image_height", 0, "multiple of 28"),
        ("engine.backend", "tflite", "'torch', 'onnxruntime', 'tensorrt', 'oracle'"),
        ("window.size", 20, "1..12"),
        ("engine.precision", "int8", "'fp32', 'fp16', 'bf16'"),
        ("input.qos", "best", "'sensor_data', 'reliable'"),
    ],
)
def test_invalid_values_name_the_key_and_the_allowed_values(key, value, needle):
    with pytest.raises(ConfigError) as err:
        IggtConfig().replace(**{key: value})
    assert f"'{key}'" in str(err.value)
    assert needle in str(err.value)


def test_unknown_keys_and_wrong_types_are_rejected():
    with pytest.raises(ConfigError, match="unknown config key 'window.sise'"):
        IggtConfig.from_dict({"window": {"sise": 4}})
    with pytest.raises(ConfigError, match="unknown config section 'windows'"):
        IggtConfig.from_dict({"windows": {"size": 4}})
    with pytest.raises(ConfigError, match="'window.size'.*integer"):
        IggtConfig.from_dict({"window": {"size": "8"}})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/iggt.yaml")


def test_integers_are_accepted_for_float_keys():
    cfg = IggtConfig.from_dict({"input": {"sync_slop_s": 1}})
    assert isinstance(cfg.input.sync_slop_s, float) and cfg.input.sync_slop_s == 1.0


def test_window_of_too_many_images_is_refused_with_the_size_that_fits():
    with pytest.raises(ConfigError, match=r"window.size x 2 cameras = 16 images.*set window.size to 6"):
        IggtConfig().replace(**{"input.cameras": ["left", "right"]})
    cfg = IggtConfig().replace(**{"input.cameras": ["left", "right"], "window.size": 6})
    assert cfg.window.size * len(cfg.input.cameras) == 12


def _outside(bound):
    """A value the bound refuses (just past its lower or upper end), or None for choice bounds."""
    if bound.choices:
        return "not-a-choice"
    if bound.hi is not None and bound.hi_open:
        return bound.hi
    if bound.hi is not None:
        return bound.hi + 1
    return bound.lo if bound.lo_open else bound.lo - 1


def test_declared_bounds_hold_the_defaults_and_refuse_values_outside_with_the_rule():
    cfg = IggtConfig()
    checked = 0
    for section in dataclasses.fields(cfg):
        part = getattr(cfg, section.name)
        bounds = getattr(type(part), "BOUNDS", {})
        names = {f.name for f in dataclasses.fields(part)}
        assert set(bounds) <= names, f"{section.name}: bounds for unknown keys {set(bounds) - names}"
        for key, bound in bounds.items():
            assert bound.allows(getattr(part, key)), f"default of {section.name}.{key} breaks its own bound"
            value = _outside(bound)
            if isinstance(getattr(part, key), int) and not isinstance(value, str):
                value = int(value) if float(value).is_integer() else value
            with pytest.raises(ConfigError) as err:
                cfg.replace(**{f"{section.name}.{key}": value}).validate()
            assert f"'{section.name}.{key}'" in str(err.value) and bound.describe() in str(err.value)
            checked += 1
    assert checked >= 50
