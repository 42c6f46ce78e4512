"""The collected-latency JSON file (LATENCY_DATA_PATH): periodic summaries kept for a retention period.

Layout: {"version": 1, "samples": [sample, ...]}, oldest first. A sample is a flat record with the
seed's fields (time, window, count, messages/s, min/avg/P50/P95/P99/max, target compliance) plus
the live/replayed split and the receive and store delays. The file is replaced atomically, so a
reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from monitoring.latency import LatencySummary

FILE_VERSION = 1


def sample_record(summary: LatencySummary, collected_at: float) -> dict[str, Any]:
    """One collected sample: the seed's flat fields for all points, then the details."""
    details = summary.as_dict()
    end_to_end = details.pop("end_to_end")
    return {
        "time": round(collected_at, 3),
        "start": round(summary.start, 3),
        "end": round(summary.end, 3),
        "window_s": details.pop("window_s"),
        "count": details.pop("count"),
        "messages_per_s": details.pop("messages_per_s"),
        **{key: end_to_end[key] for key in ("min_ms", "avg_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms")},
        "target_p95_ms": details.pop("target_p95_ms"),
        "compliant": details.pop("compliant"),
        **{key: value for key, value in details.items() if key not in ("start", "end")},
    }


def load_collected(path: str | Path) -> list[dict[str, Any]]:
    """The samples in the file, oldest first; an absent file has none."""
    file = Path(path)
    if not file.exists():
        return []
    try:
        document = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file} is not valid JSON ({exc}); move it away and collect again") from None
    samples = document.get("samples") if isinstance(document, dict) else document
    if not isinstance(samples, list):
        raise ValueError(f"{file} has no 'samples' list; it was not written by collect_latency_data")
    return sorted((s for s in samples if isinstance(s, dict) and "time" in s), key=lambda s: s["time"])


def append_collected(
    path: str | Path, new_samples: list[dict[str, Any]], *, retention_s: float, now: float
) -> list[dict[str, Any]]:
    """Add samples, drop those collected more than `retention_s` before `now`; returns what is kept."""
    kept = [s for s in load_collected(path) + new_samples if s["time"] >= now - retention_s]
    kept.sort(key=lambda s: s["time"])
    _write_atomically(Path(path), {"version": FILE_VERSION, "samples": kept})
    return kept


def _write_atomically(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w") as file:
            json.dump(document, file, indent=1, allow_nan=False)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
