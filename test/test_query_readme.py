"""The query numbers the README publishes are those of benchmarks/results/query.json and query_latency.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"(?<![\w.])\d+\.\d+")


def readme_row(first_cell: str) -> list[str]:
    rows = [line for line in (ROOT / "README.md").read_text().splitlines()
            if line.startswith("|") and line.split("|")[1].strip().startswith(first_cell)]
    assert len(rows) == 1, f"README must have one table row starting with {first_cell!r}"
    return NUMBER.findall(rows[0].split("|", 2)[2])


def test_readme_query_table_matches_the_results():
    r = json.loads((ROOT / "benchmarks" / "results" / "query.json").read_text())
    gt, pipe = r["summary"], r["pipeline"]["summary"]
    expect = {
        "canonical": [gt["canonical"]["top1"], pipe["canonical"]["top1"]],
        "held-out phrasings": [gt["held_out"]["top1"], pipe["held_out"]["top1"]],
        "the same, thesaurus without": [gt["held_out_blind"]["top1"], pipe["held_out_blind"]["top1"]],
        "relations and superlatives from true geometry": [r["relations"]["all"]["top1"],
                                                          r["pipeline"]["relations"]["all"]["top1"]],
    }
    for cell, values in expect.items():
        assert readme_row(cell) == [f"{v:.3f}" for v in values], cell


def test_readme_latency_matches_the_results():
    lat = json.loads((ROOT / "benchmarks" / "results" / "query_latency.json").read_text())
    text = (ROOT / "README.md").read_text()
    assert f"median {lat['median_ms']:.1f} ms, p95 {lat['p95_ms']:.1f} ms" in text
