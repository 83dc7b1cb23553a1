"""Token-grid ceiling: the best instance masks a model can give when its answer is constant over a token.

    .venv/bin/python benchmarks/ceiling.py [--groups default,foreign] [--out benchmarks/results]

A model whose instance head decodes from tokens of `patch` pixels, upsampled bilinearly, cannot place a
boundary more finely than that grid allows. This measures the limit without any model: every true
object's mask (at the model input, masks under 20 px dropped as the quality benchmark does) is averaged
over each token cell, upsampled bilinearly to the input size, and every pixel takes the object (or the
background) with the largest value. The score is the mean per-object IoU of that answer (IoU pooled over
the views of a sequence, then averaged over objects and sequences), the same objects `benchmarks/quality.py`
scores. Designs with full-resolution image features in their heads are not bounded by it, but their
tokens still are what separates neighbouring objects.

Run it for every candidate design before training one; `benchmarks/quality.py` reports the ceiling of the
model it scores next to its T-mIoU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from iggt_ros.threads import prepare_process  # noqa: E402

prepare_process()  # the package's thread policy, before numpy and torch load (they read it once)

import numpy as np  # noqa: E402

from iggt_ros.engine.preprocess import resize_nearest  # noqa: E402
from iggt_ros.eval.metrics import drop_small_instances  # noqa: E402
from iggt_ros.train.evaluate import FOREIGN_SCENARIOS, HELD_OUT_SCENARIOS, TRAIN_DOMAIN_SCENARIOS  # noqa: E402

CEILING_GROUPS = {"default": HELD_OUT_SCENARIOS, "train": TRAIN_DOMAIN_SCENARIOS, "foreign": FOREIGN_SCENARIOS}
MIN_AREA_PX = 20


@dataclass(frozen=True)
class GridDesign:
    """An input size and patch side: together they fix the token grid."""

    name: str
    input_hw: tuple[int, int]
    patch: int

    @property
    def grid(self) -> tuple[int, int]:
        return self.input_hw[0] // self.patch, self.input_hw[1] // self.patch


DESIGNS = (
    GridDesign("tiny (14-px patches, shipped)", (84, 140), 14),
    GridDesign("tiny_fine (7-px patches)", (84, 140), 7),
    GridDesign("252x168, 14-px patches", (168, 252), 14),
    GridDesign("140x84, 4-px patches", (84, 140), 4),
    GridDesign("504x336, 14-px patches (official)", (336, 504), 14),
)
"""The candidate grids: the two the study trains, and three for reference (not trainable here)."""


def token_constant_labels(ids: np.ndarray, patch: int) -> np.ndarray:
    """The best token-constant answer for one view.

    Args:
        ids: [H, W] integer instance IDs (0 = background), H and W multiples of `patch`.
        patch: token side in pixels.

    Returns:
        [H, W] IDs: per pixel, the ID whose token-averaged, bilinearly upsampled mask is largest.
    """
    import torch
    import torch.nn.functional as F

    labels, inverse = np.unique(ids, return_inverse=True)
    onehot = torch.nn.functional.one_hot(torch.from_numpy(inverse.reshape(ids.shape)), len(labels))
    masks = onehot.permute(2, 0, 1).unsqueeze(0).float()  # [1, K, H, W]
    pooled = F.avg_pool2d(masks, patch, patch)
    up = F.interpolate(pooled, size=ids.shape, mode="bilinear", align_corners=False)
    return labels[up[0].argmax(0).numpy()]


def object_ious(truth: list[np.ndarray], pred: list[np.ndarray]) -> dict[int, float]:
    """IoU of every true object (ID > 0), pooled over the views of a sequence."""
    inter: dict[int, int] = {}
    union: dict[int, int] = {}
    for t, p in zip(truth, pred, strict=True):
        for obj in np.unique(t):
            if obj == 0:
                continue
            a, b = t == obj, p == obj
            inter[obj] = inter.get(obj, 0) + int((a & b).sum())
            union[obj] = union.get(obj, 0) + int((a | b).sum())
    return {int(k): inter[k] / union[k] for k in inter if union[k]}


def truth_views(scenario, input_hw: tuple[int, int]) -> list[np.ndarray]:
    """The scored true instance maps of a scenario at the model input (as the quality benchmark scores them)."""
    sequence = scenario.make()
    return [drop_small_instances(resize_nearest(v.instance_ids, input_hw), MIN_AREA_PX).astype(np.int64)
            for v in sequence.views()]


def sequence_ceiling(views: list[np.ndarray], patch: int) -> float:
    """Mean per-object IoU of the token-constant answer over one sequence's views."""
    ious = object_ious(views, [token_constant_labels(v, patch) for v in views])
    return float(np.mean(list(ious.values()))) if ious else float("nan")


def group_ceiling(scenarios, design: GridDesign) -> dict:
    """Ceiling of one design on a group of scenarios: per sequence and the mean over sequences."""
    per = {s.name: sequence_ceiling(truth_views(s, design.input_hw), design.patch) for s in scenarios}
    return {"mean": float(np.nanmean(list(per.values()))), "sequences": per}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", default="default,foreign", help="comma-separated: default, train, foreign")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    results = {}
    for design in DESIGNS:
        results[design.name] = {"input_hw": list(design.input_hw), "patch": design.patch,
                                "grid": list(design.grid), "groups": {}}
        for group in groups:
            res = group_ceiling(CEILING_GROUPS[group], design)
            results[design.name]["groups"][group] = res
            print(f"{design.name:36s} {group:8s} grid {design.grid[1]}x{design.grid[0]}: {res['mean']:.3f}", flush=True)
    head = "| design | input (WxH) | token grid | " + " | ".join(groups) + " |"
    sep = "|---|---|---|" + "---:|" * len(groups)
    rows = [f"| {name} | {r['input_hw'][1]}x{r['input_hw'][0]} | {r['grid'][1]}x{r['grid'][0]} | "
            + " | ".join(f"{r['groups'][g]['mean']:.3f}" for g in groups) + " |" for name, r in results.items()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ceiling.md").write_text(
        "# Token-grid ceiling of each candidate design\n\n"
        "Mean per-object IoU of the best answer that is constant over a token: every true mask (at the model "
        f"input, masks under {MIN_AREA_PX} px dropped) averaged over the token grid, upsampled bilinearly, best "
        "object per pixel; IoU pooled over a sequence's views, averaged over objects, then over the sequences of "
        "the group (the quality benchmark's scenes). No model is involved: no design decoding from these tokens "
        "alone can exceed it. A head that also reads full-resolution image features (`tiny_fine_image`) is not "
        "bounded by it for boundaries, only for which tokens tell neighbours apart.\n\n"
        + "\n".join([head, sep, *rows]) + "\n\n"
        f"Generated by `benchmarks/ceiling.py` on {time.strftime('%Y-%m-%d')}.\n")
    (out / "ceiling.json").write_text(json.dumps(
        {"designs": [asdict(d) for d in DESIGNS], "results": results}, indent=2) + "\n")
    print(f"wrote {out / 'ceiling.md'} and {out / 'ceiling.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
