"""The deployment memory the README publishes is what benchmarks/deploy_memory.py measured."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "deploy_memory"


def readme_row(first_cell: str) -> str:
    rows = [line for line in (ROOT / "README.md").read_text().splitlines()
            if line.startswith("|") and line.split("|")[1].strip().startswith(first_cell)]
    assert len(rows) == 1, f"README must have one table row starting with {first_cell!r}"
    return rows[0]


def measured(name: str) -> dict:
    return json.loads((RESULTS / f"deploy_memory_{name}.json").read_text())


def test_readme_deploy_memory_rows_are_the_measured_runs():
    tiny, parity = measured("tiny_140x84_S8"), measured("parity_504x336_S8")
    for run in (tiny, parity):
        assert run["export"]["rc"] == 0 and run["build_only"]["rc"] == 0
        assert not run["build_only"]["torch_loaded"] and not run["build_only"]["model_loaded"]
    export = readme_row("1. export (workstation)")
    assert f"S=8: {tiny['export']['peak_rss_mib']:.0f} MiB" in export
    assert f"S=8: {parity['export']['peak_rss_mib']:.0f} MiB" in export
    check = readme_row("2. build-only, ONNX check")
    assert f"tiny: {tiny['build_only']['peak_rss_mib']:.0f} MiB" in check
    assert f"parity fixture: {parity['build_only']['peak_rss_mib']:.0f} MiB" in check


def test_readme_makes_no_unbacked_jetson_claims():
    text = (ROOT / "README.md").read_text()
    for claim in ("fits an 8 GB Orin", "about 0.1 s per", "lose most of their pose accuracy"):
        assert claim not in text, claim
    assert "JetPack 6.1 and 6.2 ship TensorRT 10.3" in text and "--system-site-packages" in text
