"""Fuzzing at scale: every input target of test/test_fuzz_inputs.py, thousands of cases each.

    .venv/bin/python benchmarks/fuzz.py [--cases 10500] [--limit-s 2] [--seed 0]

Runs the structure-aware targets (bag files, CDR messages, raw and compressed images, camera_info,
TF, stamp sequences) with hypothesis, each case under a time limit, and counts how each ended: a
result, a clear refusal (the documented exception for bad input, with a message), an uncaught
exception or a hang. Writes benchmarks/results/fuzz.{md,json}; exits 1 when any case was uncaught
or hung, listing the first of them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import platform
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from iggt_ros.threads import prepare_process  # noqa: E402

prepare_process()  # the package's thread policy, before the harness loads numpy (it reads it once)
SHARE = {"cdr": 0.19, "image": 0.19, "compressed": 0.14, "camera_info": 0.14, "tf": 0.14, "stamps": 0.14,
         "bag": 0.06}
"""Share of the cases per target (bag cases cost a file write and a full read each)."""


def load_harness():
    spec = importlib.util.spec_from_file_location("test_fuzz_inputs", ROOT / "test" / "test_fuzz_inputs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["test_fuzz_inputs"] = module
    spec.loader.exec_module(module)
    return module


def run_target(harness, name: str, cases: int, limit_s: float, seed: int) -> dict:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    target, strategy = harness.TARGETS[name]
    kinds: Counter[str] = Counter()
    findings: list[str] = []
    slowest = 0.0
    started = time.perf_counter()

    @hseed(seed)
    @settings(max_examples=cases, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy())
    def run(case):
        nonlocal slowest
        outcome = harness.run_case(target, case, limit_s)
        kinds[outcome.kind] += 1
        slowest = max(slowest, outcome.seconds)
        if outcome.kind in ("uncaught", "hang") and len(findings) < 5:
            findings.append(f"{outcome.kind}: {outcome.detail[:300]}")

    run()
    return {"cases": sum(kinds.values()), "outcomes": dict(kinds), "slowest_case_s": round(slowest, 4),
            "wall_s": round(time.perf_counter() - started, 2), "findings": findings}


def render(report: dict) -> str:
    lines = ["# Fuzzing: every input target, structure-aware", "",
             f"Command: `{report['command']}`  ",
             f"Machine: {report['machine']}; hypothesis {report['hypothesis']}; per-case limit {report['limit_s']} s; "
             f"seed {report['seed']}.", "",
             f"**{report['cases']} cases: {report['uncaught']} uncaught exceptions, {report['hangs']} hangs.**", "",
             "| target | cases | result | refusal | uncaught | hang | slowest case (s) | wall (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, t in report["targets"].items():
        o = t["outcomes"]
        lines.append(f"| {name} | {t['cases']} | {o.get('result', 0)} | {o.get('refusal', 0)} | {o.get('uncaught', 0)} "
                     f"| {o.get('hang', 0)} | {t['slowest_case_s']:.3f} | {t['wall_s']:.1f} |")
    lines += ["", "A *result* is a decoded message, image, calibration, pose or a bag read to its end (or to the "
              "start of its damage); a *refusal* is the documented exception for bad input (`ValueError` "
              "subclasses such as `UnsupportedEncoding`, `CorruptMessage`, `InvalidTransform`; `TransformError`; "
              "`BagError`) with a message. Targets and the seed corpus: `test/test_fuzz_inputs.py`, "
              "`test/fuzz_corpus/`."]
    findings = [f"- {name}: {f}" for name, t in report["targets"].items() for f in t["findings"]]
    if findings:
        lines += ["", "Findings:", *findings]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10500, help="cases over all targets (default 10500)")
    parser.add_argument("--limit-s", type=float, default=2.0, help="time limit per case (default 2 s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", nargs="+", default=None, help="only these targets")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for fuzz.md and fuzz.json")
    args = parser.parse_args(argv)
    import hypothesis

    logging.disable(logging.CRITICAL)  # every refusal is also logged once; the counts are the output here
    harness = load_harness()
    names = args.targets or list(SHARE)
    targets = {}
    for name in names:
        n = max(1, round(args.cases * SHARE[name] / sum(SHARE[k] for k in names)))
        targets[name] = run_target(harness, name, n, args.limit_s, args.seed)
        print(f"{name}: {targets[name]['cases']} cases {targets[name]['outcomes']} "
              f"({targets[name]['wall_s']:.1f} s)", flush=True)
    cases = sum(t["cases"] for t in targets.values())
    uncaught = sum(t["outcomes"].get("uncaught", 0) for t in targets.values())
    hangs = sum(t["outcomes"].get("hang", 0) for t in targets.values())
    report = {"command": "python benchmarks/fuzz.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": f"{platform.machine()}, {platform.python_version()}", "hypothesis": hypothesis.__version__,
              "limit_s": args.limit_s, "seed": args.seed, "cases": cases, "uncaught": uncaught, "hangs": hangs,
              "targets": targets}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fuzz.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "fuzz.md").write_text(render(report))
    print(f"{cases} cases, {uncaught} uncaught, {hangs} hangs -> {args.out / 'fuzz.md'}")
    return 1 if uncaught or hangs else 0


if __name__ == "__main__":
    sys.exit(main())
