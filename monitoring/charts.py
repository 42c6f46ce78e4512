"""The report's PNG charts, drawn with matplotlib's Agg backend (no display needed).

Every `plot_*` function takes plain numpy arrays and returns one laid-out figure; `save` writes
it and frees it. Times are Unix seconds and are shown as local clock time, over the span the data
covers (not the period asked for); latencies are milliseconds on a log axis, because a replay
after an outage (tens of seconds) and live traffic (milliseconds) must both stay readable.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from monitoring.latency import Gap, Span, covered_span

FIGURE_SIZE = (11, 5)
DPI = 110
LIVE_COLOR = "#1f77b4"
REPLAYED_COLOR = "#ff7f0e"
TARGET_COLOR = "#d62728"
GAP_COLOR = "#7f7f7f"
# Legends sit right of the plot so they never hide data.
OUTSIDE_LEGEND = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0, "fontsize": 9}
MIN_LATENCY_MS = 0.1  # floor for the log axis; smaller (or negative) values are drawn at it
TIME_MARGIN = 0.02  # share of the data's span left free at each end of a time axis
MIN_TIME_AXIS_S = 60.0  # a time axis shows at least this much, so one instant sits in a readable minute
# Tick labels by tick spacing (years, months, days, hours, minutes, seconds); the date goes in the
# offset text at the axis' end, and a tick at midnight names its day.
TIME_FORMATS = ["%Y", "%b", "%d %b", "%H:%M", "%H:%M", "%H:%M:%S"]
TIME_OFFSET_FORMATS = ["", "%Y", "%b %Y", "%d %b %Y", "%d %b %Y", "%d %b %Y"]
TIME_ZERO_FORMATS = ["", "%Y", "%b", "%d %b", "%H:%M", "%H:%M:%S"]


def plot_percentiles(
    times: np.ndarray,
    p50: np.ndarray,
    p95: np.ndarray,
    p99: np.ndarray,
    *,
    target_ms: float,
    span: Span | None = None,
    gaps: Sequence[Gap] = (),
    title: str = "End-to-end latency percentiles (live points)",
) -> Figure:
    """`span` is the time the data covers (default: that of `times`); the x-axis fits it."""
    figure, axes = plt.subplots(figsize=FIGURE_SIZE, dpi=DPI)
    x = clock_time(times)
    axes.plot(x, _floor(p50), color="#2ca02c", marker=".", linewidth=1.2, label="P50")
    axes.plot(x, _floor(p95), color=LIVE_COLOR, marker=".", linewidth=1.6, label="P95")
    axes.plot(x, _floor(p99), color="#9467bd", marker=".", linewidth=1.0, linestyle=":", label="P99")
    _target_line(axes, target_ms)
    _shade_gaps(axes, gaps)
    _latency_axis(axes, np.concatenate([p50, p95, p99, [target_ms]]))
    _time_axis(axes, span or _span_of(times))
    axes.set_title(title)
    axes.legend(**OUTSIDE_LEGEND)
    return _laid_out(figure)


def plot_distribution(live_ms: np.ndarray, replayed_ms: np.ndarray, *, target_ms: float) -> Figure:
    figure, (hist_axes, cdf_axes) = plt.subplots(1, 2, figsize=FIGURE_SIZE, dpi=DPI)
    values = [v[np.isfinite(v)] for v in (live_ms, replayed_ms)]
    everything = np.concatenate(values)
    if everything.size == 0:
        for axes in (hist_axes, cdf_axes):
            axes.text(0.5, 0.5, "no points", ha="center", va="center", transform=axes.transAxes)
        return _laid_out(figure)
    low = max(MIN_LATENCY_MS, float(np.min(everything)))
    high = max(low * 10, float(np.max(everything)), target_ms * 1.2)
    bins = np.geomspace(low, high, 60)
    labels = [f"live ({values[0].size:,})", f"replayed ({values[1].size:,})"]
    hist_axes.hist(
        [np.clip(v, low, high) for v in values],
        bins=bins,
        stacked=True,
        color=[LIVE_COLOR, REPLAYED_COLOR],
        label=labels,
    )
    hist_axes.set_xscale("log")
    hist_axes.xaxis.set_major_formatter(FuncFormatter(_ms_label))
    hist_axes.set_xlabel("End-to-end latency (log scale)")
    hist_axes.set_ylabel("Points")
    hist_axes.set_title("Histogram")
    _target_line(hist_axes, target_ms, vertical=True)
    hist_axes.legend(fontsize=9)

    for data, color, name in (
        (everything, "black", "all"),
        (values[0], LIVE_COLOR, "live"),
        (values[1], REPLAYED_COLOR, "replayed"),
    ):
        if data.size == 0:
            continue
        ordered = np.sort(np.clip(data, low, None))
        shown = ordered[np.linspace(0, ordered.size - 1, min(ordered.size, 4000)).astype(np.int64)]
        fraction = np.linspace(0, 1, shown.size) * 100
        cdf_axes.plot(shown, fraction, color=color, linewidth=1.4 if name == "all" else 1.0, label=name)
    for q, style in ((50, ":"), (95, "--"), (99, "-.")):
        cdf_axes.axhline(q, color=GAP_COLOR, linestyle=style, linewidth=0.8)
    percentiles = cdf_axes.secondary_yaxis("right")
    percentiles.set_yticks([50, 95, 99], labels=["P50", "P95", "P99"], fontsize=8)
    _target_line(cdf_axes, target_ms, vertical=True)
    cdf_axes.set_xscale("log")
    cdf_axes.xaxis.set_major_formatter(FuncFormatter(_ms_label))
    cdf_axes.set_xlabel("End-to-end latency (log scale)")
    cdf_axes.set_ylabel("Points at or below (%)")
    cdf_axes.set_ylim(0, 101)
    cdf_axes.set_title("Cumulative distribution")
    cdf_axes.legend(**{**OUTSIDE_LEGEND, "bbox_to_anchor": (1.1, 1.0)})
    for axes in (hist_axes, cdf_axes):
        axes.grid(True, which="major", alpha=0.3)
    figure.suptitle("End-to-end latency distribution (write time − publish time)")
    return _laid_out(figure)


def plot_device_boxes(
    live_ms: dict[str, np.ndarray],
    *,
    target_ms: float,
    replayed_p95_ms: dict[str, float] | None = None,
    max_devices: int = 40,
) -> Figure:
    """One box per device of its live points (box P25–P75, median line, whiskers P5–P95, no outliers),
    with each device's replayed P95 as a marker."""
    items = [(name, v[np.isfinite(v)]) for name, v in live_ms.items()]
    items = [(name, v) for name, v in items if v.size]
    if len(items) > max_devices:
        items = sorted(items, key=lambda item: -float(np.percentile(item[1], 95)))[:max_devices]
        items.sort(key=lambda item: item[0])
    width = min(22, max(8, 0.45 * len(items) + 3))
    figure, axes = plt.subplots(figsize=(width, 5.5), dpi=DPI)
    if not items:
        axes.text(0.5, 0.5, "no live points", ha="center", va="center", transform=axes.transAxes)
        return _laid_out(figure)
    positions = np.arange(1, len(items) + 1)
    axes.boxplot(
        [_floor(v) for _, v in items],
        positions=positions,
        tick_labels=[name for name, _ in items],
        whis=(5, 95),
        showfliers=False,
        patch_artist=True,
        boxprops={"facecolor": "#c6dbef", "edgecolor": LIVE_COLOR},
        medianprops={"color": "black"},
    )
    shown = [v for _, v in items] + [np.array([target_ms])]
    replayed = [(x, (replayed_p95_ms or {}).get(name)) for x, (name, _) in zip(positions, items, strict=True)]
    replayed = [(x, value) for x, value in replayed if value is not None]
    if replayed:
        xs, ys = zip(*replayed, strict=True)
        axes.scatter(xs, _floor(np.array(ys)), marker="D", s=36, color=REPLAYED_COLOR, zorder=3, label="replayed P95")
        shown.append(np.array(ys))
    _target_line(axes, target_ms)
    _latency_axis(axes, np.concatenate(shown))
    axes.tick_params(axis="x", labelrotation=45 if len(items) > 6 else 0, labelsize=9)
    axes.set_xlabel("Device")
    title = "Live end-to-end latency per device (box P25–P75, median line, whiskers P5–P95)"
    if len(live_ms) > len(items):
        title += f"\n{len(items)} of {len(live_ms)} devices: those with the highest P95"
    axes.set_title(title)
    axes.legend(loc="best", fontsize=9)
    return _laid_out(figure)


def plot_throughput(
    edges: np.ndarray,
    produced_per_s: np.ndarray,
    stored_per_s: np.ndarray | None,
    *,
    span: Span | None = None,
    window_s: float | None = None,
    gaps: Sequence[Gap] = (),
) -> Figure:
    """Rates per window between `edges` (NaN: a window the data does not cover) of `window_s` (default:
    the first window's width); the x-axis fits `span`."""
    figure, axes = plt.subplots(figsize=FIGURE_SIZE, dpi=DPI)
    x = clock_time(edges)
    axes.stairs(produced_per_s, x, fill=True, color=LIVE_COLOR, alpha=0.3, label="published (by device time)")
    if stored_per_s is not None:
        axes.stairs(stored_per_s, x, color=REPLAYED_COLOR, linewidth=1.6, label="stored (by write time)")
    _shade_gaps(axes, gaps)
    _time_axis(axes, span or _span_of(edges))
    _rate_axis(axes, "Messages per second", produced_per_s, stored_per_s)
    axes.set_title(f"Throughput over time (windows of {width_label(window_s or float(edges[1] - edges[0]))})")
    axes.legend(**OUTSIDE_LEGEND)
    return _laid_out(figure)


def plot_live_vs_replayed(
    *,
    target_ms: float,
    edges: np.ndarray,
    live_per_s: np.ndarray,
    replayed_per_s: np.ndarray,
    points: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    window_p95: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    span: Span | None = None,
    gaps: Sequence[Gap] = (),
) -> Figure:
    """Top: latency of live vs replayed points (a scatter of `points` = (time, ms, replayed), or the
    per-window P95 lines `window_p95` = (time, live, replayed)). Bottom: their rates, stacked."""
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 7), dpi=DPI, sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    shown: list[np.ndarray] = [np.array([target_ms])]
    if points is not None:
        times, latency_ms, replayed = points
        for mask, color, name in ((~replayed, LIVE_COLOR, "live"), (replayed, REPLAYED_COLOR, "replayed")):
            top.scatter(
                clock_time(times[mask]),
                _floor(latency_ms[mask]),
                s=_dot_size(len(times)),
                color=color,
                alpha=0.5,
                linewidths=0,
                label=f"{name} ({int(mask.sum()):,} drawn)",
            )
            shown.append(latency_ms[mask])
        top.set_title(
            "Latency of live vs replayed points (each dot is a point; replayed = sent from a device's offline queue)"
        )
    if window_p95 is not None:
        times, live, replayed = window_p95
        top.plot(clock_time(times), _floor(live), color=LIVE_COLOR, marker=".", label="live P95")
        top.plot(clock_time(times), _floor(replayed), color=REPLAYED_COLOR, marker=".", label="replayed P95")
        shown += [live, replayed]
        top.set_title("P95 latency of live vs replayed points")
    _target_line(top, target_ms)
    _shade_gaps(top, gaps)
    _latency_axis(top, np.concatenate(shown))
    top.legend(**OUTSIDE_LEGEND, markerscale=3)

    x = clock_time(edges)
    bottom.stairs(live_per_s + replayed_per_s, x, fill=True, color=REPLAYED_COLOR, alpha=0.8, label="replayed")
    bottom.stairs(live_per_s, x, fill=True, color=LIVE_COLOR, alpha=0.9, label="live")
    _shade_gaps(bottom, gaps, label=False)
    _rate_axis(bottom, "Messages/s", live_per_s + replayed_per_s)
    bottom.legend(**OUTSIDE_LEGEND)
    _time_axis(bottom, span or _span_of(edges))
    return _laid_out(figure)


# --- shared pieces -------------------------------------------------------------------------


def clock_time(times: np.ndarray) -> np.ndarray:
    """Unix seconds -> datetime64 in local clock time, which matplotlib draws natively."""
    values = np.asarray(times, dtype=np.float64)
    if values.size == 0:
        return values.astype("datetime64[ms]")
    finite = values[np.isfinite(values)]
    reference = float(finite[0]) if finite.size else 0.0
    offset = datetime.fromtimestamp(reference).astimezone().utcoffset()
    shift = offset.total_seconds() if offset is not None else 0.0
    return np.round((values + shift) * 1000).astype("datetime64[ms]")


def _span_of(times: np.ndarray) -> Span:
    span = covered_span(np.asarray(times, dtype=np.float64))
    return span if span is not None else (0.0, 0.0)


def _time_axis(axes: Axes, span: Span) -> None:
    """Fit the x-axis to `span` plus a small margin, with tick labels that never run into each other:
    a locator that keeps ticks few, and short labels (the date sits once, at the axis' end)."""
    first, last = span
    margin = max(TIME_MARGIN * (last - first), (MIN_TIME_AXIS_S - (last - first)) / 2)
    low, high = clock_time(np.array([first - margin, last + margin]))
    axes.set_xlim(low, high)
    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(
        mdates.ConciseDateFormatter(
            locator, formats=TIME_FORMATS, offset_formats=TIME_OFFSET_FORMATS, zero_formats=TIME_ZERO_FORMATS
        )
    )
    axes.set_xlabel("Time (local clock)")


def _rate_axis(axes: Axes, label: str, *rates: np.ndarray | None) -> None:
    axes.set_ylabel(label)
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    if not any(r is not None and np.isfinite(r).any() for r in rates):
        axes.text(0.5, 0.5, "no rate: the points cover no time", ha="center", va="center", transform=axes.transAxes)


def _latency_axis(axes: Axes, values_ms: np.ndarray) -> None:
    finite = values_ms[np.isfinite(values_ms)]
    axes.set_yscale("log")
    if finite.size:
        low = max(MIN_LATENCY_MS, float(np.min(finite)))
        high = max(float(np.max(finite)), low * 10)
        axes.set_ylim(low / 1.6, high * 1.6)
        decades = np.log10(high / low)
        axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0,) if decades > 4 else (1.0, 2.0, 5.0)))
    axes.yaxis.set_major_formatter(FuncFormatter(_ms_label))
    axes.yaxis.set_minor_formatter(NullFormatter())
    axes.set_ylabel("Latency (log scale)")
    axes.grid(True, which="major", alpha=0.3)


def _target_line(axes: Axes, target_ms: float, vertical: bool = False) -> None:
    label = f"P95 target {_ms_label(target_ms)}"
    if vertical:
        axes.axvline(target_ms, color=TARGET_COLOR, linestyle="--", linewidth=1.4, label=label)
    else:
        axes.axhline(target_ms, color=TARGET_COLOR, linestyle="--", linewidth=1.4, label=label)


def _shade_gaps(axes: Axes, gaps: Sequence[Gap], label: bool = True) -> None:
    for index, gap in enumerate(gaps):
        start, end = clock_time(np.array([gap.start, gap.end]))
        axes.axvspan(
            start, end, color=GAP_COLOR, alpha=0.2, label="nothing received (outage)" if label and index == 0 else None
        )


def _dot_size(count: int) -> float:
    """Small dots for a crowd, bigger ones when there are few, so a handful of points stays visible."""
    return float(np.clip(20_000 / max(count, 1), 4, 25))


def _floor(values_ms: np.ndarray) -> np.ndarray:
    return np.maximum(np.asarray(values_ms, dtype=np.float64), MIN_LATENCY_MS)


def _ms_label(value: float, _position: object = None) -> str:
    if value >= 1000:
        return f"{value / 1000:g} s"
    return f"{value:g} ms"


def width_label(width_s: float) -> str:
    """A window width: "5 s", "10 min", "6 h"."""
    if width_s < 120:
        return f"{width_s:g} s"
    return f"{width_s / 60:g} min" if width_s < 7200 else f"{width_s / 3600:g} h"


def _laid_out(figure: Figure) -> Figure:
    figure.tight_layout()
    return figure


def save(figure: Figure, path: Path) -> Path:
    """Write `figure` as a PNG and free it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)
    return path
