"""The report's figures, drawn with matplotlib's Agg renderer into PNG bytes.

Figures are built as plain :class:`~matplotlib.figure.Figure` objects on an
Agg canvas, never through ``pyplot``: nothing is registered in pyplot's global
figure list (so nothing stays open and no GUI backend is ever touched), and a
report can be drawn in a Ray worker or any thread. Every figure is drawn under
matplotlib's default style so the user's ``matplotlibrc`` cannot change it, and
PNGs carry no software or date metadata, so the same inputs give the same bytes.
A PNG may carry its :func:`figure_key` instead, so a report written again can
reuse a figure whose inputs did not change rather than draw it again.
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import matplotlib
import matplotlib.style
import numpy as np
import pandas as pd
import PIL.Image
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
BAR_COLOR = "#4C72B0"
POINT_COLOR = "#222222"
BASELINE_COLOR = "#C44E52"

KEY_ENTRY = "crossemo figure key"
"""The PNG text entry that holds a figure's :func:`figure_key`."""

# What the pixels depend on besides a figure's inputs: how this module draws, and the matplotlib that renders.
_DRAWING_CODE = hashlib.sha256(Path(__file__).read_bytes() + matplotlib.__version__.encode()).hexdigest()

P = ParamSpec("P")
R = TypeVar("R")


def _styled(function: Callable[P, R]) -> Callable[P, R]:
    """Run ``function`` under matplotlib's default style, whatever rcParams say."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with matplotlib.style.context("default"):
            return function(*args, **kwargs)

    return wrapper


def _plain(text: object) -> str:
    """Text from data shown literally: a ``$`` would otherwise start matplotlib's math mode."""
    return str(text).replace("$", r"\$")


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


@_styled
def render_png(figure: Figure, *, key: str | None = None) -> bytes:
    """Draw a figure to PNG bytes and release its contents.

    Args:
        figure: a figure from this module.
        key: its :func:`figure_key`, kept in the PNG's :data:`KEY_ENTRY` text entry.

    Returns:
        the PNG file's bytes.
    """
    buffer = io.BytesIO()
    # No "Software" entry and no date: the same figure key gives the same bytes (the key covers the matplotlib version).
    metadata = {"Software": None, **({KEY_ENTRY: key} if key else {})}
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white", metadata=metadata)
    figure.clear()
    return buffer.getvalue()


def figure_key(draw: Callable[..., Figure], *args: Any, **kwargs: Any) -> str:
    """A digest of everything the PNG of ``draw(*args, **kwargs)`` depends on.

    The drawing function's name, its arguments (frames and arrays by content,
    the rest by ``repr``), this module's source and matplotlib's version: two
    equal keys give the same bytes.

    Returns:
        64 hexadecimal digits.
    """
    digest = hashlib.sha256(f"{draw.__qualname__}\n{_DRAWING_CODE}\n".encode())
    for name, value in [*enumerate(args), *sorted(kwargs.items())]:
        digest.update(f"\n{name}=".encode())
        if isinstance(value, (pd.DataFrame, pd.Series)):
            digest.update(value.to_csv().encode())
        elif isinstance(value, np.ndarray):
            digest.update(f"{value.dtype}{value.shape}".encode() + np.ascontiguousarray(value).tobytes())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()


def png_key(png: bytes) -> str | None:
    """The :func:`figure_key` a PNG from :func:`render_png` carries; ``None`` for a PNG without one or bytes that are no PNG."""
    try:
        with PIL.Image.open(io.BytesIO(png)) as image:
            return image.text.get(KEY_ENTRY) if image.format == "PNG" else None
    except (OSError, ValueError, SyntaxError):  # what Pillow raises for bytes it cannot read
        return None


def _offsets(count: int, *, width: float) -> np.ndarray:
    """Evenly spread offsets for ``count`` points, so fold dots do not overlap and need no randomness."""
    if count <= 1:
        return np.zeros(count)
    return np.linspace(-width / 2, width / 2, count)


@_styled
def method_bars(folds: pd.DataFrame, *, title: str, metrics: Sequence[tuple[str, str]] = (("accuracy", "Accuracy (%)"), ("uar", "UAR (%)")), baseline: str | None = None) -> Figure:
    """Horizontal bars of each method's mean over folds, with std error bars and every fold as a dot.

    Args:
        folds: one row per fold with a ``label`` column (methods in the order to draw,
            top to bottom) and one column per metric, in percent.
        title: the figure title.
        metrics: ``(column, axis label)`` per panel, side by side.
        baseline: a label whose mean is drawn as a dashed reference line in every panel.

    Returns:
        the figure.

    Raises:
        ValueError: ``folds`` is empty.
    """
    if folds.empty:
        raise ValueError("no fold results to draw")
    labels = list(dict.fromkeys(folds["label"]))
    figure = _new_figure(11, 1.4 + 0.42 * len(labels))
    axes = figure.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    positions = np.arange(len(labels))
    for ax, (column, axis_label) in zip(axes, metrics):
        groups = [folds.loc[folds["label"] == label, column].dropna().to_numpy(dtype=float) for label in labels]
        means = np.array([g.mean() if len(g) else np.nan for g in groups])
        # Sample std (ddof=1) over folds, the same spread the tables print.
        spreads = np.array([g.std(ddof=1) if len(g) > 1 else 0.0 for g in groups])
        ax.barh(positions, np.nan_to_num(means), xerr=spreads, color=BAR_COLOR, alpha=0.75, height=0.6, capsize=3, error_kw={"elinewidth": 1})
        for y, values in zip(positions, groups):
            ax.scatter(values, y + _offsets(len(values), width=0.4), s=12, color=POINT_COLOR, zorder=3, linewidths=0)
        for y, mean in zip(positions, means):
            if not np.isnan(mean):
                # Inside the bar's base when it is long enough to hold the number, else just past its end.
                inside = mean >= 8
                ax.text(1 if inside else mean + 1, y, f"{mean:.1f}", va="center", ha="left", fontsize=8, color="white" if inside else "black", fontweight="bold")
        if baseline in labels:
            ax.axvline(means[labels.index(baseline)], color=BASELINE_COLOR, linestyle="--", linewidth=1, label=f"{_plain(baseline)} mean")
        ax.set_xlim(0, 100)
        ax.set_xlabel(axis_label)
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
    axes[0].set_yticks(positions, [_plain(label) for label in labels])
    axes[0].invert_yaxis()
    if baseline in labels:
        # Below the panels rather than inside them, where it would cover the last bars.
        handles, texts = axes[0].get_legend_handles_labels()
        figure.legend(handles, texts, loc="outside lower center", fontsize=8, frameon=False)
    figure.suptitle(_plain(title))
    return figure


def _annotation_color(value: float, *, threshold: float) -> str:
    """White text on dark cells and black on light ones, so every number stays legible."""
    return "white" if value > threshold else "black"


@_styled
def confusion_matrix(counts: np.ndarray, labels: Sequence[str], *, title: str) -> Figure:
    """A confusion matrix coloured by recall (each row normalised), with counts annotated.

    Args:
        counts: square matrix, rows true class, columns predicted class.
        labels: class names in the matrix's order.
        title: the figure title.

    Returns:
        the figure.

    Raises:
        ValueError: ``counts`` is not square or does not match ``labels``.
    """
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2 or counts.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion counts of shape {counts.shape} do not match {len(labels)} labels")
    totals = counts.sum(axis=1, keepdims=True)
    # A class absent from the test rows has no recall; leave its row blank instead of dividing by zero.
    share = np.divide(counts, totals, out=np.full_like(counts, np.nan), where=totals > 0)
    figure = _new_figure(4.2, 3.9)
    ax = figure.subplots()
    image = ax.imshow(np.ma.masked_invalid(share), cmap="Blues", vmin=0, vmax=1)
    for row in range(len(labels)):
        for column in range(len(labels)):
            if np.isnan(share[row, column]):
                continue
            text = f"{share[row, column] * 100:.0f}%\n({counts[row, column]:.0f})"
            ax.text(column, row, text, ha="center", va="center", fontsize=8, color=_annotation_color(share[row, column], threshold=0.55))
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, [_plain(label) for label in labels], rotation=30, ha="right")
    ax.set_yticks(ticks, [_plain(label) for label in labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(_plain(title), fontsize=10)
    figure.colorbar(image, ax=ax, shrink=0.8, label="share of true class")
    return figure


@_styled
def speaker_heatmap(table: pd.DataFrame, *, title: str, value_label: str = "accuracy (%)") -> Figure:
    """A heatmap of one value per fold (rows) and method (columns), each cell annotated.

    Args:
        table: rows are folds, columns are methods, values in percent; missing cells stay blank.
        title: the figure title.
        value_label: the colour bar's label.

    Returns:
        the figure.

    Raises:
        ValueError: ``table`` is empty.
    """
    if table.empty:
        raise ValueError("no per-fold values to draw")
    values = table.to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 100.0)
    if high - low < 1:
        low, high = low - 0.5, high + 0.5
    figure = _new_figure(1.8 + 0.85 * table.shape[1], 1.6 + 0.38 * table.shape[0])
    ax = figure.subplots()
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=low, vmax=high, aspect="auto")
    threshold = low + (high - low) * 0.5
    for row in range(values.shape[0]):
        for column in range(values.shape[1]):
            value = values[row, column]
            if np.isfinite(value):
                # viridis is dark at the low end, so low values get white text.
                color = "black" if value > threshold else "white"
                ax.text(column, row, f"{value:.1f}", ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(np.arange(table.shape[1]), [_plain(c) for c in table.columns], rotation=35, ha="right")
    ax.set_yticks(np.arange(table.shape[0]), [_plain(i) for i in table.index])
    ax.set_xlabel("method")
    ax.set_ylabel("training speaker (fold)")
    ax.set_title(_plain(title), fontsize=11)
    figure.colorbar(image, ax=ax, label=value_label)
    return figure


@_styled
def verdict_gains(table: pd.DataFrame, *, title: str) -> Figure:
    """Per pair, the recommended method's UAR gain over the best target-only model with its 95 % interval, and over the Baseline RF.

    Args:
        table: :data:`crossemo.report.verdict.VERDICT_COLUMNS` rows, one per pair.
        title: the figure title.

    Raises:
        ValueError: ``table`` is empty.
    """
    if table.empty:
        raise ValueError("no verdict to draw")
    labels = [f"{source} → {target}" for source, target in zip(table["source"], table["target"])]
    figure = _new_figure(9, 1.4 + 0.55 * len(labels))
    ax = figure.subplots()
    positions = np.arange(len(labels))
    gains = table["gain_vs_target_only"].to_numpy(dtype=float)
    low = np.nan_to_num(gains - table["ci_low"].to_numpy(dtype=float))
    high = np.nan_to_num(table["ci_high"].to_numpy(dtype=float) - gains)
    ax.errorbar(gains, positions, xerr=[low, high], fmt="o", color=BAR_COLOR, capsize=4, label="vs best target-only model, 95 % CI")
    ax.scatter(table["gain_vs_baseline"].to_numpy(dtype=float), positions + 0.2, marker="s", s=22, color=BASELINE_COLOR, label="vs Baseline RF (S2)")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(positions, [_plain(label) for label in labels])
    ax.invert_yaxis()
    ax.set_xlabel("UAR gain of borrowing (percentage points)")
    ax.grid(axis="x", alpha=0.3)
    figure.legend(*ax.get_legend_handles_labels(), loc="outside lower center", fontsize=8, frameon=False, ncols=2)
    figure.suptitle(_plain(title))
    return figure
