"""Parity of the IGGT implementation with the official release.

(a) The full-size model has exactly the official state-dict layout (keys, shapes, dtypes).
(b) The parity-fixture model, loaded strictly with the fixture weights, reproduces every
    official output of every fixture case within the fixture's tolerance.

The fixture lives outside the repository: `IGGT_PARITY_DIR`, default `<repo>/../shared/reference/parity`.
Without it the tests skip, unless `IGGT_REQUIRE_PARITY=1` (CI), where they fail.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from iggt_ros.model import Iggt, IggtModelConfig
from iggt_ros.model.window_attention import overlap_attention_index, self_attention_index

REPO = Path(__file__).resolve().parent.parent
RTOL, ATOL = 1e-4, 1e-5
CASES = ("s3", "s2", "s1")
OUTPUTS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf", "part_feat")


def parity_file(name: str) -> Path:
    root = Path(os.environ.get("IGGT_PARITY_DIR", REPO.parent / "shared" / "reference" / "parity"))
    path = root / name
    if not path.is_file():
        why = f"parity fixture file {path} is missing (set IGGT_PARITY_DIR to the parity folder)"
        if os.environ.get("IGGT_REQUIRE_PARITY") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return path


def layout_lines(entries: dict[str, tuple[tuple[int, ...], str]]) -> str:
    """Fingerprint text as the fixture README defines it: '<key>|<shape>|<dtype>' per entry, sorted."""
    return "".join(f"{k}|{','.join(str(d) for d in shape)}|{dtype}\n" for k, (shape, dtype) in sorted(entries.items()))


def test_official_state_dict_layout_matches_release():
    """The release's layout key for key, except its point-track head, which the package does not build."""
    reference = json.loads(parity_file("iggt_official_state_dict.json").read_text())
    release = {e["key"]: (tuple(e["shape"]), e["dtype"]) for e in reference["state_dict"]}
    assert hashlib.sha256(layout_lines(release).encode()).hexdigest() == reference["fingerprint"]["sha256"]
    track = {k: v for k, v in release.items() if k.startswith("track_head.")}
    assert track, "the release carries a track head"
    expected = {k: v for k, v in release.items() if k not in track}
    with torch.device("meta"):
        model = Iggt(IggtModelConfig.official())
    got = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}

    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    different = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    report = (
        f"missing {len(missing)}: {missing[:20]}\nunexpected {len(unexpected)}: {unexpected[:20]}\n"
        f"shape/dtype differs {len(different)}: {[(k, expected[k], got[k]) for k in different[:20]]}"
    )
    assert not (missing or unexpected or different), report
    track_parameters = sum(math.prod(shape) for shape, _ in track.values())
    assert sum(p.numel() for p in model.parameters()) == reference["total_parameters"] - track_parameters


def test_window_index_tables_match_release():
    """The int64 index buffers travel in the checkpoint, so their values must equal the official ones."""
    reference = json.loads(parity_file("iggt_official_state_dict.json").read_text())
    entries = {e["key"]: e for e in reference["state_dict"]}
    tables = {
        "part_head.window_cross_attention.relative_position_index_OCA": overlap_attention_index(8, 12),
        "part_head.window_cross_attention.relative_position_index_SA": self_attention_index(8),
        "part_head.window_self_atten.relative_position_index_SA": self_attention_index(8),
    }
    for key, table in tables.items():
        digest = hashlib.sha256(np.ascontiguousarray(table.numpy().astype("<i8")).tobytes()).hexdigest()
        assert digest == entries[key]["int_values_sha256_int64_le_c_order"], key
        assert (int(table.min()), int(table.max())) == (entries[key]["int_values_min"], entries[key]["int_values_max"])


@pytest.fixture(scope="module")
def fixture_model():
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    model = Iggt(IggtModelConfig.parity_fixture())
    model.load_state_dict(load_file(str(parity_file("tiny_iggt.safetensors"))), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def fixture_io():
    with np.load(parity_file("tiny_iggt_io.npz")) as data:
        return {k: data[k] for k in data.files}


def test_fixture_holds_exactly_the_tested_cases(fixture_io):
    assert {key.split(".")[0] for key in fixture_io} == set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_fixture_outputs_match_release(fixture_model, fixture_io, case):
    images = torch.from_numpy(fixture_io[f"{case}.images"])
    with torch.no_grad():
        out = fixture_model(images)
        layers = fixture_model.aggregator(
            images, fixture_model.input_tables(tuple(images.shape[-2:])).rope, keep_layers=None
        )
    got = {"pose_enc": torch.stack(out["pose_enc"], 0), **{k: out[k] for k in OUTPUTS[1:]}}
    for index in (4, 11, 17, 23):
        got[f"agg_layer_{index:02d}"] = layers[index]
    for name, value in got.items():
        expected = torch.from_numpy(fixture_io[f"{case}.{name}"])
        torch.testing.assert_close(value, expected, rtol=RTOL, atol=ATOL, msg=lambda m, n=name: f"{case}.{n}: {m}")


def test_fixed_input_size_gives_the_same_outputs(fixture_model, fixture_io):
    """The precomputed tables used for export are the same tables the eager path computes."""
    images = torch.from_numpy(fixture_io["s3.images"])
    with torch.no_grad():
        eager = fixture_model(images)
        fixture_model.fix_input_size(*images.shape[-2:])
        try:
            fixed = fixture_model(images)
            frozen = fixture_model.fixed_tables.tables()
            fresh = fixture_model.input_tables(tuple(images.shape[-2:]))
        finally:
            fixture_model.release_input_size()
    for key in OUTPUTS[1:]:
        torch.testing.assert_close(fixed[key], eager[key], rtol=0, atol=0)
    torch.testing.assert_close(frozen.dino_pos_embed, fresh.dino_pos_embed, rtol=0, atol=0)
    torch.testing.assert_close(frozen.window_bias, fresh.window_bias, rtol=0, atol=0)
    assert frozen.dino_pos_embed.dtype == torch.float32
