"""Render benchmark: time to ray-cast 8-frame windows of synthetic scenes, side by side.

    .venv/bin/python benchmarks/render.py [--repeats 3]

Each row renders one window of `frames` views along an orbit trajectory (cameras look at the room
centre, where most objects stand: the costly case) and reports the best of `--repeats` runs. The
budget is 8 frames at 504x336 in 2 s or less on a 2-core CPU; rows with other sizes, object counts,
a two-camera rig and object culling switched off show how the cost scales. Scene layout and
trajectory planning are timed separately (they run once per sequence). Writes
benchmarks/results/render.md and render.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iggt_ros.threads import prepare_process  # noqa: E402

prepare_process()  # the package's thread policy, before numpy loads (it reads it once)

import numpy as np  # noqa: E402

from iggt_ros.synthetic.render import SceneRenderer  # noqa: E402
from iggt_ros.synthetic.sequence import plan_sequence  # noqa: E402

BUDGET_S = 2.0
BUDGET_CASE = (504, 336, 8)


@dataclass
class Case:
    name: str
    width: int
    height: int
    objects: int
    steps: int = 8
    cameras: int = 1
    cull: bool = True

    @property
    def frames(self) -> int:
        return self.steps * self.cameras


CASES = [
    Case("budget case, 5 objects", 504, 336, 5),
    Case("budget case, 15 objects", 504, 336, 15),
    Case("budget case, 30 objects", 504, 336, 30),
    Case("30 objects, culling off", 504, 336, 30, cull=False),
    Case("2-camera rig, 4 steps", 504, 336, 30, steps=4, cameras=2),
    Case("training size", 168, 112, 15),
    Case("4:3 cameras", 504, 392, 15),
    Case("double size", 1008, 672, 15),
]


@dataclass
class Row:
    name: str
    size: str
    objects: int
    frames: int
    cull: bool
    plan_ms: float
    render_s: float
    ms_per_frame: float
    mpix_per_s: float
    objects_visible: float
    within_budget: str


def run_case(case: Case, seed: int, repeats: int) -> Row:
    t0 = time.perf_counter()
    plan = plan_sequence(
        seed, num_steps=case.steps, cameras=case.cameras, width=case.width, height=case.height, num_objects=case.objects
    )
    plan_ms = 1e3 * (time.perf_counter() - t0)
    best = np.inf
    visible = []
    for _ in range(repeats):
        renderer = SceneRenderer(plan.scene, cull=case.cull)
        start = time.perf_counter()
        outputs = [
            renderer.render(plan.rig.intrinsics, plan.world_from_camera(t, c), case.width, case.height)
            for t in range(case.steps)
            for c in range(case.cameras)
        ]
        best = min(best, time.perf_counter() - start)
        visible = [len(np.unique(o.instance_ids)) - 1 for o in outputs]
    budget = ""
    if (case.width, case.height, case.frames) == BUDGET_CASE:
        budget = "yes" if best <= BUDGET_S else "NO"
    return Row(
        name=case.name,
        size=f"{case.width}x{case.height}",
        objects=case.objects,
        frames=case.frames,
        cull=case.cull,
        plan_ms=round(plan_ms, 1),
        render_s=round(best, 3),
        ms_per_frame=round(1e3 * best / case.frames, 1),
        mpix_per_s=round(case.width * case.height * case.frames / best / 1e6, 2),
        objects_visible=round(float(np.mean(visible)), 1),
        within_budget=budget,
    )


COLUMNS = [
    ("case", "name"),
    ("size", "size"),
    ("objects", "objects"),
    ("frames", "frames"),
    ("culling", "cull"),
    ("plan ms", "plan_ms"),
    ("render s", "render_s"),
    ("ms/frame", "ms_per_frame"),
    ("Mpix/s", "mpix_per_s"),
    ("objects in view", "objects_visible"),
    ("<= 2 s", "within_budget"),
]


def cell(row: Row, key: str) -> str:
    value = getattr(row, key)
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def print_table(rows: list[Row]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(markdown_table(rows))
        return
    table = Table(
        title=f"Render benchmark: {BUDGET_CASE[2]} frames at {BUDGET_CASE[0]}x{BUDGET_CASE[1]} <= {BUDGET_S} s"
    )
    for header, _ in COLUMNS:
        table.add_column(header, justify="left" if header == "case" else "right")
    for row in rows:
        table.add_row(*(cell(row, key) for _, key in COLUMNS))
    Console(width=160).print(table)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(h for h, _ in COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(cell(row, key) for _, key in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> dict[str, str]:
    return {
        "cpu_count": str(os.cpu_count()),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per case; the best is reported")
    parser.add_argument("--seed", type=int, default=3, help="scene seed")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="results directory")
    args = parser.parse_args()
    rows = [run_case(case, args.seed, args.repeats) for case in CASES]
    print_table(rows)
    info = machine()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "render.json").write_text(
        json.dumps(
            {"budget_s": BUDGET_S, "seed": args.seed, "machine": info, "rows": [asdict(r) for r in rows]}, indent=2
        )
        + "\n"
    )
    summary = [
        "# Render benchmark",
        "",
        f"`benchmarks/render.py`: exact numpy ray casting of synthetic scenes (scene seed {args.seed}, orbit "
        f"trajectory, best of {args.repeats} runs). Budget: {BUDGET_CASE[2]} frames at "
        f"{BUDGET_CASE[0]}x{BUDGET_CASE[1]} in {BUDGET_S} s or less.",
        "",
        f"Machine: {info['cpu_count']} CPUs ({info['processor']}), Python {info['python']}, numpy {info['numpy']}.",
        "",
        markdown_table(rows),
        "",
        "`plan ms`: scene layout, rig and trajectory (once per sequence); `render s`: all frames of the row; "
        "`objects in view`: mean number of objects with at least one pixel.",
        "",
    ]
    (args.out / "render.md").write_text("\n".join(summary))
    failed = [r.name for r in rows if r.within_budget == "NO"]
    if failed:
        print(f"over budget: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
