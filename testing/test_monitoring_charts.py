"""The report's charts on the data they are drawn for, read back from a real SQLite store: every time
axis fits the time the points cover (not the period asked for), no two labels overlap once the
figure is laid out, and the rates are those of the data. The PNGs land in the test's folder."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import matplotlib.dates as mdates
import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.text import Text

from monitoring import charts
from monitoring.report import CHART_FILES, build_store_report, store_figures
from monitoring.samples import read_samples
from rtds.schema import TelemetryRecord
from rtds.store.sqlite import SQLiteStore

PERIOD_S = 16 * 3600.0  # the README's `rtds report --duration 16h`
TIME_CHARTS = ("percentiles", "throughput", "live_vs_replayed")
# A local time, so the 16 h of data cross midnight wherever the test runs.
LAST_POINT = datetime(2026, 3, 10, 4, 0, 0).timestamp()


@dataclass(frozen=True)
class Fleet:
    devices: int
    step_s: float
    duration_s: float

    @property
    def rate_per_s(self) -> float:
        return self.devices / self.step_s


FLEETS = {
    "six_minutes": Fleet(devices=4, step_s=0.5, duration_s=360.0),
    "sixteen_hours": Fleet(devices=3, step_s=20.0, duration_s=PERIOD_S),
    "one_point": Fleet(devices=1, step_s=1.0, duration_s=0.0),
}


def write_fleet(store: SQLiteStore, fleet: Fleet, last: float) -> None:
    """Every device publishes on the same instants; the collector writes each instant as one batch."""
    rng = random.Random(5)
    instants = round(fleet.duration_s / fleet.step_s) + 1
    for step in range(instants):
        t = last - fleet.duration_s + step * fleet.step_s
        records = [
            TelemetryRecord(
                f"vehicle_{d + 1:02d}", t, 40.0, seq=step, collector_receive_time=t + rng.uniform(0.002, 0.03)
            )
            for d in range(fleet.devices)
        ]
        store.write(records, collector="python", write_time=max(r.collector_receive_time for r in records) + 0.005)


def labels_of(axes: Axes) -> list[Text]:
    """Every drawn piece of text around the axes: tick labels in view, offset texts, axis labels."""
    texts: list[Text] = []
    for axis in (axes.xaxis, axes.yaxis):
        low, high = sorted(axis.get_view_interval())
        texts += [
            label
            for location, label in zip(axis.get_majorticklocs(), axis.get_majorticklabels(), strict=False)
            if low <= location <= high and label.get_visible() and label.get_text()
        ]
        texts += [text for text in (axis.get_offset_text(), axis.label) if text.get_visible() and text.get_text()]
    return texts


def overlapping_labels(figure: Figure) -> list[tuple[str, str]]:
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    clashes = []
    for axes in figure.axes:
        for parent_or_child in (axes, *axes.child_axes):
            boxes = [(text.get_text(), text.get_window_extent(renderer)) for text in labels_of(parent_or_child)]
            clashes += [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]
    return clashes


@pytest.mark.parametrize("name", list(FLEETS))
def test_time_axes_fit_the_data_and_no_labels_overlap(name: str, tmp_path: Path) -> None:
    fleet = FLEETS[name]
    store = SQLiteStore(tmp_path / "telemetry.db")
    write_fleet(store, fleet, LAST_POINT)
    until = LAST_POINT + 5
    since = until - max(PERIOD_S, fleet.duration_s + 60)
    samples = read_samples(store, since, until)
    store.close()
    report = build_store_report(
        samples, since, until, backend="sqlite", target_p95_ms=2000, window_s=None, gap_s=60, sample_limit=50_000
    )

    first = LAST_POINT - fleet.duration_s
    assert report.covered == (pytest.approx(first), pytest.approx(LAST_POINT))
    if fleet.duration_s:
        # The rate of the data, not its count spread over the 16 h asked for.
        assert report.overall.messages_per_s == pytest.approx(fleet.rate_per_s, rel=1e-6)
        assert np.allclose(report.produced_per_s, fleet.rate_per_s, rtol=1e-6)
        assert fleet.duration_s / report.window_s <= 120
    else:
        assert report.overall.messages_per_s is None  # one instant covers no time

    # Allowed: the data's span plus 5 %, or a minute around a single instant.
    allowed = max(0.05 * fleet.duration_s, 60.0)
    data_low, data_high = mdates.date2num(charts.clock_time(np.array([first, LAST_POINT])))
    slack_low, slack_high = mdates.date2num(charts.clock_time(np.array([first - allowed, LAST_POINT + allowed])))
    figures = store_figures(report)
    try:
        for chart, figure in figures.items():
            assert overlapping_labels(figure) == [], chart
            if chart in TIME_CHARTS:
                for axes in figure.axes:
                    low, high = axes.get_xlim()
                    assert slack_low <= low <= data_low and data_high <= high <= slack_high, (chart, low, high)
    finally:
        for chart, figure in figures.items():
            charts.save(figure, tmp_path / name / CHART_FILES[chart])
    assert sorted(p.name for p in (tmp_path / name).iterdir()) == sorted(CHART_FILES.values())
