"""``edgeemo predict``'s output formats: per-window table, CSV and JSON, and the one-row-per-file summary CSV.

Owns :class:`PredictionWriter`, which takes predictions one at a time and either streams
them to a text stream as they come (table, CSV and summary rows; JSON at the end, as one
list) or keeps the whole text for an atomic write to a file. The per-window layouts are
:func:`edgeemo.runtime.model.format_predictions`'s; the summary columns are
:data:`SUMMARY_FIELDS`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import IO, Any

from edgeemo.errors import EdgeemoError
from edgeemo.runtime.model import CSV_FIELDS, format_predictions

SUMMARY_FIELDS = ("path", "duration_s", "valence", "arousal", "quadrant", "mood", "windows")
FORMATS = ("table", "csv", "json", "summary")


def summary_row(pred: Any) -> dict[str, Any]:
    """One :data:`SUMMARY_FIELDS` row for a prediction (CSV-ready strings)."""
    s = pred.summary
    return {
        "path": pred.path or "",
        "duration_s": f"{s['duration_s']:.3f}",
        "valence": f"{s['valence']:.6f}",
        "arousal": f"{s['arousal']:.6f}",
        "quadrant": s["quadrant"],
        "mood": s["mood"],
        "windows": s["windows"],
    }


def csv_text(rows: Sequence[dict[str, Any]], fields: Sequence[str], header: bool) -> str:
    """``rows`` as CSV text with ``fields`` as columns (and the header line when ``header``)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


class PredictionWriter:
    """Formats predictions as they arrive; writes them to ``stream`` at once, or keeps them for :meth:`text`.

    Nothing is written (not even a CSV header) until the first prediction arrives.
    """

    def __init__(self, fmt: str, stream: IO[str] | None = None) -> None:
        if fmt not in FORMATS:
            raise EdgeemoError(f"unknown format {fmt!r} ({', '.join(FORMATS)})")
        self.fmt, self.stream = fmt, stream
        self.count = 0
        self._parts: list[str] = []
        self._json: list[dict[str, Any]] = []

    def _emit(self, text: str) -> None:
        if self.stream is None:
            self._parts.append(text)
        else:
            self.stream.write(text)
            self.stream.flush()

    def add(self, pred: Any) -> None:
        first = self.count == 0
        self.count += 1
        if self.fmt == "json":
            self._json.append(pred.to_dict())
        elif self.fmt == "csv":
            self._emit(csv_text(pred.to_csv_rows(), CSV_FIELDS, header=first))
        elif self.fmt == "summary":
            self._emit(csv_text([summary_row(pred)], SUMMARY_FIELDS, header=first))
        else:
            self._emit(("" if first else "\n") + format_predictions([pred], "table"))

    def close(self) -> None:
        """Write what only the end can (the JSON list)."""
        if self.fmt == "json" and self._json:
            self._emit(json.dumps(self._json, indent=2) + "\n")
            self._json = []

    def text(self) -> str:
        """Everything formatted so far (when no stream was given)."""
        return "".join(self._parts)
