"""Generic CSV manifests: ``path,valence,arousal`` (+ optional ``start_s,end_s,artist,id``) for any dataset.

A manifest declares its label scale on an optional first line ``# scale: LOW HIGH``
(e.g. ``# scale: 1 9`` for DEAM-style ratings, ``# scale: 0 1`` for PMEmo); without
one, labels must already be in [-1, 1] (or pass ``scale=`` to :func:`read_manifest`).
Relative paths resolve against the manifest's folder. Missing audio files are
reported in ``SongSet.skipped`` and left out, never silently.

A manifest is untrusted input; :func:`read_manifest` refuses, with one line naming the
line at fault: text that is not UTF-8 (UTF-16, binary), rows with more fields than the
header or too few to hold ``path,valence,arousal`` (missing optional trailing fields are
empty), non-numeric or out-of-scale labels, a negative ``start_s`` or an
``end_s`` not after it, an ``id`` repeated with a different path, labels or excerpt,
and the same audio excerpt labelled twice differently. An exact repeat of a row (same
id and content) is a warning: it is left out and listed in ``SongSet.skipped``.
Whether ``start_s``/``end_s`` lie inside the audio needs the file's header; ``edgeemo
data check`` (:func:`edgeemo.data.check.check_dataset`) reports that.
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


def read_text_csv(path: Path) -> str:
    """A CSV file's text: UTF-8 (a BOM is allowed), else a one-line :class:`DataError` that says what it is."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read the manifest ({exc.strerror or exc})", path=path) from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError("the manifest is UTF-16 text; save it as UTF-8 CSV", path=path)
    if b"\x00" in raw[:65536]:
        raise DataError("the manifest is a binary file, not a UTF-8 CSV", path=path)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"the manifest is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save it as UTF-8 CSV",
            path=path,
        ) from None


def read_manifest(path: str | Path, scale: tuple[float, float] | None = None, name: str | None = None) -> SongSet:
    """Read a manifest CSV into a :class:`SongSet` with labels mapped to [-1, 1]."""
    path = Path(path)
    if not path.is_file():
        raise DataError("manifest not found", path=path)
    text = read_text_csv(path).splitlines()
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
    seen: dict[str, tuple[int, tuple]] = {}  # song id -> (line, content) of its first row
    seen_audio: dict[tuple, tuple[int, tuple[float, float]]] = {}  # (path, start, end) -> (line, labels)
    for row in reader:
        line_no = reader.line_num + (declared is not None)  # the file's line, also after blank or multi-line rows
        if None in row or any(row[c] is None for c in REQUIRED):  # too many fields, or a required one absent
            n = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None) or [])
            raise DataError(
                f"line {line_no}: {n} field(s), the header has {len(header)} (a comma inside a path needs quotes; "
                f"{', '.join(REQUIRED)} are required)",
                path=path,
            )
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
        start = _float(row["start_s"], "start_s", line_no, path) if (row.get("start_s") or "").strip() else 0.0
        end = _float(row["end_s"], "end_s", line_no, path) if (row.get("end_s") or "").strip() else None
        if start < 0:
            raise DataError(f"line {line_no}: start_s {start:g} is negative", path=path)
        if end is not None and end <= start:
            raise DataError(f"line {line_no}: end_s {end} is not after start_s {start}", path=path)
        content = (str(audio), v, a, start, end)
        if song_id in seen:
            first, before = seen[song_id]
            if before != content:
                raise DataError(
                    f"line {line_no}: id {song_id!r} repeats line {first} with a different path, labels or excerpt "
                    "(give each song its own id)",
                    path=path,
                )
            skipped.append(f"{song_id}: line {line_no} duplicates line {first} (left out)")
            continue
        seen[song_id] = (line_no, content)
        key = (str(audio), start, end)
        if key in seen_audio and seen_audio[key][1] != (v, a):
            raise DataError(
                f"line {line_no}: {audio.name} (start {start:g} s) is labelled ({v:g}, {a:g}) here but "
                f"{seen_audio[key][1]} on line {seen_audio[key][0]}: conflicting labels",
                path=path,
            )
        seen_audio.setdefault(key, (line_no, (v, a)))
        if not audio.is_file():
            skipped.append(f"{song_id}: audio file {audio} is missing")
            continue
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
