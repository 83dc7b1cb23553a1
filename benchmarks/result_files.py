"""Where a benchmark's report lands: `<name>.json` (the numbers) and `<name>.md` (the table) in one folder."""

from __future__ import annotations

import json
from pathlib import Path


def write_results(out: str | Path, name: str, report: dict, text: str) -> None:
    """Write the report and its markdown table under `out`, creating the folder, and print the table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{name}.md").write_text(text)
    print(text)
