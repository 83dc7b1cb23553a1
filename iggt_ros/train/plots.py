"""Loss curves from the training CSV log."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

CURVES = ("loss", "camera", "depth", "points", "instance")


def read_log(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of the CSV log as float arrays."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return {}
    return {key: np.array([float(r[key]) for r in rows]) for key in rows[0]}


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average: single steps are noisy because every window is a new scene."""
    if len(values) == 0 or window <= 1:
        return values
    cumsum = np.cumsum(np.insert(values, 0, 0.0))
    out = np.empty_like(values)
    for i in range(len(values)):
        lo = max(0, i + 1 - window)
        out[i] = (cumsum[i + 1] - cumsum[lo]) / (i + 1 - lo)
    return out


def plot_losses(log_path: str | Path, png_path: str | Path, window: int = 50) -> Path | None:
    """Write one panel per loss term (raw and smoothed) to `png_path`; None when the log is empty."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = read_log(log_path)
    if not cols or len(cols.get("step", [])) == 0:
        return None
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    for ax, key in zip(axes, CURVES, strict=True):
        ax.plot(cols["step"], cols[key], color="0.8", lw=0.6)
        ax.plot(cols["step"], smooth(cols[key], window), color="C0", lw=1.5)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=90)
    plt.close(fig)
    return png_path
