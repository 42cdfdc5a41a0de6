"""Trajectory plots of a :class:`Prediction` (matplotlib, optional, imported only when plotting).

One PNG per prediction: valence and arousal over time (left) and the path on the
valence/arousal plane (right, coloured by time, quadrant words in the corners).
Uses matplotlib's object API with the Agg canvas, so it never touches pyplot's
global backend of an embedding app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeemo.errors import EdgeemoError

PLOT_HINT = "plotting needs matplotlib, which is not installed: pip install 'edgeemo[plot]'"


def require_matplotlib() -> tuple[Any, Any]:
    """matplotlib's ``(Figure, FigureCanvasAgg)``, or a one-line :class:`EdgeemoError` naming the ``plot`` extra."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise EdgeemoError(PLOT_HINT) from None
    return Figure, FigureCanvasAgg




def plot_prediction(pred: Any, out_png: str | Path, *, title: str | None = None) -> Path:
    """Save the valence/arousal trajectory of ``pred`` as a PNG; returns the path."""
    figure_cls, canvas_cls = require_matplotlib()
    out_png = Path(out_png)
    fig = figure_cls(figsize=(11, 4.5), dpi=100)
    canvas_cls(fig)
    ax_t, ax_va = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1]})
    times = np.asarray(pred.times, dtype=float)
    v = np.asarray(pred.valence, dtype=float)
    a = np.asarray(pred.arousal, dtype=float)
    marker = "o" if times.size < 3 else None
    ax_t.plot(times, v, label="valence", color="tab:blue", marker=marker)
    ax_t.plot(times, a, label="arousal", color="tab:red", marker=marker)
    ax_t.axhline(0, color="0.6", lw=0.8)
    ax_t.set(xlabel="time (s)", ylabel="value", ylim=(-1.05, 1.05))
    ax_t.grid(alpha=0.3)
    ax_t.legend(loc="upper right")
    ax_va.axhline(0, color="0.6", lw=0.8)
    ax_va.axvline(0, color="0.6", lw=0.8)
    for word, (x, y, ha, va) in {
        "happy": (0.95, 0.95, "right", "top"),
        "tense": (-0.95, 0.95, "left", "top"),
        "sad": (-0.95, -0.95, "left", "bottom"),
        "calm": (0.95, -0.95, "right", "bottom"),
    }.items():
        ax_va.text(x, y, word, ha=ha, va=va, color="0.45")
    if times.size:
        ax_va.plot(v, a, color="0.7", lw=0.8)
        points = ax_va.scatter(v, a, c=times, cmap="viridis", s=14, zorder=3)
        fig.colorbar(points, ax=ax_va, label="time (s)")
        ax_va.scatter([v[0]], [a[0]], marker="s", s=40, facecolor="none", edgecolor="k", zorder=4, label="start")
        ax_va.scatter([v[-1]], [a[-1]], marker="*", s=90, color="k", zorder=4, label="end")
        summ = pred.summary
        ax_va.scatter(
            [summ["valence"]], [summ["arousal"]], marker="X", s=80, color="tab:orange", zorder=5, label="mean"
        )
        ax_va.legend(loc="lower left", bbox_to_anchor=(0.0, 0.08), fontsize=8, frameon=False)
    ax_va.set(xlim=(-1.05, 1.05), ylim=(-1.05, 1.05), xlabel="valence", ylabel="arousal", aspect="equal")
    name = title or (Path(pred.path).name if getattr(pred, "path", None) else "signal")
    extra = " (padded: shorter than one window)" if getattr(pred, "padded", False) else ""
    mood = f"{pred.summary.get('quadrant')} {pred.summary.get('mood')}" if pred.summary.get("quadrant") else "-"
    fig.suptitle(f"{name}: {mood}{extra}")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(str(out_png), format="png")
    except OSError as exc:
        raise EdgeemoError(f"cannot write {out_png} ({exc.strerror or exc})") from None
    return out_png
