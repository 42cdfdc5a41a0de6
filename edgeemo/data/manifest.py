"""Generic CSV manifests: ``path,valence,arousal`` (+ optional ``start_s,end_s,artist,id``) for any dataset.

A manifest declares its label scale on an optional first line ``# scale: LOW HIGH``
(e.g. ``# scale: 1 9`` for DEAM-style ratings, ``# scale: 0 1`` for PMEmo); without
one, labels must already be in [-1, 1] (or pass ``scale=`` to :func:`read_manifest`).
Relative paths resolve against the manifest's folder. Missing audio files are
reported in ``SongSet.skipped`` and left out, never silently.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path

from edgeemo.data.types import Song, SongSet, scale_to_unit
from edgeemo.errors import DataError

REQUIRED = ("path", "valence", "arousal")
OPTIONAL = ("start_s", "end_s", "artist", "id")
_SCALE_PREFIX = "# scale:"


def _parse_scale(line: str, path: Path) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in line[len(_SCALE_PREFIX) :].replace(",", " ").split())
    except ValueError:
        raise DataError(f"bad scale line {line.strip()!r}; expected '# scale: LOW HIGH'", path=path) from None
    if not high > low:
        raise DataError(f"scale needs LOW < HIGH, got {low} {high}", path=path)
    return low, high


def _float(value: str, column: str, line_no: int, path: Path) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise DataError(f"line {line_no}: {column} {value!r} is not a number", path=path) from None
    if not math.isfinite(out):
        raise DataError(f"line {line_no}: {column} is {value}", path=path)
    return out


def read_manifest(path: str | Path, scale: tuple[float, float] | None = None, name: str | None = None) -> SongSet:
    """Read a manifest CSV into a :class:`SongSet` with labels mapped to [-1, 1]."""
    path = Path(path)
    if not path.is_file():
        raise DataError("manifest not found", path=path)
    text = path.read_text(encoding="utf-8-sig").splitlines()
    declared = None
    if text and text[0].lstrip().lower().startswith(_SCALE_PREFIX):
        declared = _parse_scale(text[0].strip(), path)
        text = text[1:]
    if scale is not None and declared is not None and tuple(scale) != declared:
        raise DataError(f"manifest declares scale {declared} but {tuple(scale)} was given", path=path)
    low, high = scale or declared or (-1.0, 1.0)
    reader = csv.DictReader(text)
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise DataError(f"manifest lacks column(s) {', '.join(missing)} (needs {','.join(REQUIRED)})", path=path)
    songs: list[Song] = []
    skipped: list[str] = []
    for row in reader:
        line_no = reader.line_num + (declared is not None)  # the file's line, also after blank or multi-line rows
        audio = Path(row["path"].strip())
        if not audio.is_absolute():
            audio = path.parent / audio
        v = _float(row["valence"], "valence", line_no, path)
        a = _float(row["arousal"], "arousal", line_no, path)
        for col, val in (("valence", v), ("arousal", a)):
            if not low <= val <= high:
                hint = "" if declared or scale else " (declare the scale with a first line '# scale: LOW HIGH')"
                raise DataError(f"line {line_no}: {col} {val} outside the scale {low:g}..{high:g}{hint}", path=path)
        song_id = (row.get("id") or "").strip() or audio.stem
        if not audio.is_file():
            skipped.append(f"{song_id}: audio file {audio} is missing")
            continue
        start = _float(row["start_s"], "start_s", line_no, path) if (row.get("start_s") or "").strip() else 0.0
        end = _float(row["end_s"], "end_s", line_no, path) if (row.get("end_s") or "").strip() else None
        if end is not None and end <= start:
            raise DataError(f"line {line_no}: end_s {end} is not after start_s {start}", path=path)
        songs.append(
            Song(
                id=song_id,
                path=audio,
                valence=float(scale_to_unit(v, low, high)),
                arousal=float(scale_to_unit(a, low, high)),
                group=(row.get("artist") or "").strip() or song_id,
                start_s=start,
                end_s=end,
                source=name or path.stem,
            )
        )
    if not songs and not skipped:
        raise DataError("manifest has no rows", path=path)
    return SongSet(
        name=name or path.stem,
        songs=songs,
        description=f"CSV manifest {path.name} ({len(songs)} songs, labels scaled from {low:g}..{high:g})",
        skipped=skipped,
    )


def write_manifest(path: str | Path, rows: Iterable[dict], scale: tuple[float, float] = (-1.0, 1.0)) -> Path:
    """Write rows (dicts with at least ``path, valence, arousal``) as a manifest with its scale line.

    Paths inside ``path``'s folder are written relative to it, so the folder can move.
    """
    path = Path(path)
    rows = list(rows)
    columns = list(REQUIRED) + [c for c in OPTIONAL if any(c in r for r in rows)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        f.write(f"{_SCALE_PREFIX} {scale[0]:g} {scale[1]:g}\n")
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            r = dict(r)
            p = Path(r["path"])
            try:
                r["path"] = p.resolve().relative_to(path.parent.resolve()).as_posix()
            except ValueError:
                r["path"] = str(p)
            writer.writerow(r)
    tmp.replace(path)
    return path
