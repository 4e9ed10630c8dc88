"""Writing benchmark results: JSON (with provenance) and CSV (one row per case)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hal.bench.runner import BenchResult


def results_document(results: Sequence[BenchResult], provenance: dict[str, Any],
                     suite: str | None = None) -> dict[str, Any]:
    """The JSON document: provenance once at the top, then one record per case."""
    return {"schema": "hal.bench/1", "suite": suite, "provenance": provenance,
            "results": [r.to_dict(with_provenance=False) for r in results]}


def write_json(path: str | Path, results: Sequence[BenchResult], provenance: dict[str, Any],
               suite: str | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results_document(results, provenance, suite), indent=2,
                               default=str) + "\n")
    return path


def write_csv(path: str | Path, results: Sequence[BenchResult],
              provenance: dict[str, Any] | None = None) -> Path:
    """One row per case; the columns are the union over rows (baseline columns vary)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [r.csv_row() for r in results]
    for row in rows:
        for k in ("hal_version", "git_commit", "date"):
            row[k] = (provenance or {}).get(k)
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    return path
