"""The numbers the README publishes are the numbers in the results files the benchmarks wrote.

Each checked README line is found by its first table cell; its numbers, in order, must equal the
results-file values rounded to the digits the README shows. A benchmark rerun that changes a result,
or a README edit that drifts from it, fails here until the two agree again.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "results"
NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?")


def results(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def row(first_cell: str) -> str:
    """The one README table row whose first cell starts with `first_cell`."""
    rows = [line.strip() for line in README.read_text().splitlines()
            if line.strip().startswith("|") and line.strip().split("|")[1].strip().startswith(first_cell)]
    assert len(rows) == 1, f"README must have one table row starting with {first_cell!r}, found {len(rows)}"
    return rows[0]


def shown(text: str) -> list[str]:
    return NUMBER.findall(text)


def agree(shown_numbers: list[str], values: list[float]) -> list[str]:
    """Mismatches between README numbers (as written) and results values rounded to the same digits."""
    bad = []
    for text, value in zip(shown_numbers, values, strict=True):
        digits = len(text.split(".")[1]) if "." in text else 0
        if f"{value:.{digits}f}" != text:
            bad.append(f"README {text} vs results {value:.{digits + 2}f}")
    return bad


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("|").split("|")]


def test_models_and_engines_quality_table_is_the_quality_results():
    means = results("quality")["means"]
    expected = {
        "default look": means["default"]["tiny"],
        "randomised training looks": means["train"]["tiny"],
        "foreign looks": means["foreign"]["tiny"],
        "oracle engine, foreign looks": means["foreign"]["oracle"],
    }
    problems = []
    for first, m in expected.items():
        values = cells(row(first))[1:]
        numbers = [n for v in values for n in shown(v)]
        want = [m["t_miou"], m["t_sr"], m["ids_per_object"], m["depth_abs_rel"], m["published_abs_rel"]]
        problems += [f"{first}: {p}" for p in agree(numbers, want)]
    assert not problems, "README 'Models and engines' table differs from benchmarks/results/quality.json: " + \
        "; ".join(problems)


@pytest.mark.parametrize("first, look", [("tiny model through the pipeline, 6 held-out default-look", "default"),
                                         ("tiny model through the pipeline, 6 foreign-look", "foreign")])
def test_benchmark_headline_quality_rows_are_the_quality_results(first, look):
    means = results("quality")["means"][look]
    measured = cells(row(first))[1]
    numbers = shown(measured)
    tiny, oracle = means["tiny"], means["oracle"]
    depth = tiny["depth_abs_rel"] if look == "default" else tiny["published_abs_rel"]
    want = [tiny["t_miou"], tiny["t_sr"], depth, tiny["ids_per_object"], oracle["t_miou"], oracle["t_sr"]]
    assert not agree(numbers, want), agree(numbers, want)


def test_benchmark_headline_latency_is_the_quality_results():
    latency = results("quality")["latency"]
    numbers = shown(cells(row("tiny model, 8 frames at"))[1])
    assert not agree(numbers[:1], [latency["median_s"]]), agree(numbers[:1], [latency["median_s"]])


def test_fuzzing_numbers_are_the_fuzz_results():
    fuzz = results("fuzz")
    line = next(ln for ln in README.read_text().splitlines() if "fuzz.py" in ln and "cases" in ln)
    numbers = shown(line.replace("fuzz.py", "").replace("fuzz.md", "").replace(",", ""))
    assert numbers[:3] == [str(fuzz["cases"]), str(fuzz["uncaught"]), str(fuzz["hangs"])], (line, fuzz["cases"])


def test_the_checks_catch_a_drift():
    assert agree(["0.23", "1.05"], [0.2225, 1.0911]) == ["README 0.23 vs results 0.2225",
                                                         "README 1.05 vs results 1.0911"]
    assert agree(["0.22", "1.09"], [0.2225, 1.0911]) == []


def test_thread_policy_table_is_the_contention_results():
    """The README's table of the thread policy section is the one benchmarks/contention.py derives from its results."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("contention", ROOT / "benchmarks" / "contention.py")
    contention = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(contention)
    lines = {line.strip() for line in README.read_text().splitlines()}
    missing = [line for line in contention.readme_rows(results("contention")) if line not in lines]
    assert not missing, "README thread-policy table differs from benchmarks/results/contention.json: " + \
        "; ".join(missing)


def test_thread_policy_cold_start_is_the_contention_results():
    rows = {(r["workload"], r["setting"]): r["results"] for r in results("contention")["rows"]}
    demo, node = rows[("demo", "policy")], rows[("node", "policy")]
    text = README.read_text()
    start = text.index("Cold start, same run:")
    numbers = shown(text[start:text.index("numba caches", start)].replace("2 busy", "").replace("2 cores", ""))
    want = [demo["0"]["first_window_s"], demo["2"]["first_window_s"], node["0"]["configure_to_first_window_s"]]
    assert not agree(numbers, want), agree(numbers, want)


def test_model_card_table_is_the_quality_results():
    card = ROOT / "iggt_ros" / "data" / "tiny_iggt.md"
    line = next(ln for ln in card.read_text().splitlines() if ln.startswith("| tiny, these weights"))
    numbers = [n for c in cells(line)[1:] for n in shown(c)]
    tiny = results("quality")["means"]["default"]["tiny"]
    want = [tiny[k] for k in ("t_miou", "t_sr", "depth_abs_rel", "depth_delta_103", "pose_ate")]
    assert not agree(numbers, want), agree(numbers, want)
