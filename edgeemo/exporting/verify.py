"""The export verification gate: figures on the test split, thresholds, and the one-line verdict.

Owns what "good enough to ship" means: compression (teacher fp32 ONNX bytes /
shipped student ONNX bytes) ≥ 10x, retention (shipped student CCC / teacher CCC on
the test split) ≥ 0.90, and int8-vs-fp32 student CCC drop ≤ 0.02 absolute. Every
threshold can be overridden; a failed gate raises :class:`ExportError` naming the
first failed check.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edgeemo.exporting.onnx import ExportError


@dataclass(frozen=True)
class GateThresholds:
    min_compression: float = 10.0
    min_retention: float = 0.90
    max_int8_drop: float = 0.02

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def gate_checks(figures: dict[str, Any], th: GateThresholds) -> list[tuple[str, bool, str]]:
    """``(name, passed, description)`` for each threshold, from the figures :func:`gate_figures` makes."""
    checks = [
        (
            "compression",
            figures["compression"] >= th.min_compression,
            f"compression {figures['compression']:.2f}x (need >= {th.min_compression:g}x)",
        ),
        (
            "retention",
            figures["retention"] is not None and figures["retention"] >= th.min_retention
            if figures["retention"] is not None
            else th.min_retention < 0,
            f"retention {figures['retention']:.3f} of the teacher's CCC (need >= {th.min_retention:g})"
            if figures["retention"] is not None
            else "retention undefined: the teacher's test CCC is <= 0 (a negative --min-retention skips this check)",
        ),
    ]
    if figures.get("int8_drop") is not None:
        checks.append(
            (
                "int8_drop",
                figures["int8_drop"] <= th.max_int8_drop,
                f"int8 CCC drop {figures['int8_drop']:.4f} vs fp32 (need <= {th.max_int8_drop:g})",
            )
        )
    return checks


def gate_figures(ccc: dict[str, float], sizes: dict[str, int], params: dict[str, int], shipped: str) -> dict[str, Any]:
    """Derived figures. ``ccc``/``sizes`` are keyed teacher_torch, student_torch, student_fp32, student_int8."""
    teacher = ccc["teacher_torch"]
    fig: dict[str, Any] = {
        "shipped": shipped,
        "retention_by_model": {k: (v / teacher if teacher > 0 else None) for k, v in ccc.items()},
        "param_ratio": params["teacher"] / params["student"],
        "compression": sizes["teacher_fp32"] / sizes[shipped],
        "retention": (ccc[shipped] / teacher) if teacher > 0 else None,
        "int8_drop": (ccc["student_fp32"] - ccc["student_int8"]) if "student_int8" in ccc else None,
    }
    return fig


def enforce_gate(figures: dict[str, Any], th: GateThresholds) -> None:
    failed = [desc for _, ok, desc in gate_checks(figures, th) if not ok]
    if failed:
        raise ExportError("verification gate failed: " + "; ".join(failed) + " (no bundle written)")


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def gate_table(
    ccc: dict[str, dict[str, float]], figures: dict[str, Any], latency: dict[str, float], th: GateThresholds
) -> str:
    """The gate as a printable table."""
    rows = [f"{'model':<16}{'CCC_V':>8}{'CCC_A':>8}{'Avg':>8}{'retention':>11}{'latency ms':>12}"]
    for key in ("teacher_torch", "student_torch", "student_fp32", "student_int8"):
        if key not in ccc:
            continue
        m = ccc[key]
        lat = latency.get(key)
        rows.append(
            f"{key:<16}{m['ccc_valence']:>8.3f}{m['ccc_arousal']:>8.3f}{m['ccc_mean']:>8.3f}"
            f"{_fmt(figures['retention_by_model'][key]):>11}{'' if lat is None else f'{lat:.2f}':>12}"
        )
    rows.append(
        f"compression (teacher fp32 ONNX / {figures['shipped']}): {figures['compression']:.2f}x; "
        f"parameter ratio {figures['param_ratio']:.1f}x"
    )
    if figures.get("int8_drop") is not None:
        rows.append(f"int8 CCC drop vs fp32: {figures['int8_drop']:+.4f}")
    for _, ok, desc in gate_checks(figures, th):
        rows.append(f"[{'PASS' if ok else 'FAIL'}] {desc}")
    return "\n".join(rows)
