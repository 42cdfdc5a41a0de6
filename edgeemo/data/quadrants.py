"""Quadrant-labelled datasets (the 4Q / MERGE layout): songs tagged Q1..Q4 of Russell's plane.

Owns reading such a folder into a :class:`SongSet`. The
layout is a CSV (``annotations.csv`` by default) with a song id column (``song`` or
``id``), ``quadrant`` (Q1..Q4), optionally ``pquad`` (the share of the song's mood tags
in that quadrant, a confidence), ``artist`` and ``file`` (audio path relative to the
folder); without a ``file`` cell the audio is ``audio/<id>.mp3`` (or ``.wav``).

Quadrants become point targets: Q1 = (+m, +m) happy/excited, Q2 = (-m, +m) angry/tense,
Q3 = (-m, -m) sad/depressed, Q4 = (+m, -m) calm/relaxed, with ``m = magnitude``
(optionally times the confidence). Splits keep an artist together (``group`` is the
normalised artist name, else the song id). Missing audio goes to ``SongSet.skipped``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from edgeemo.data.types import Song, SongSet
from edgeemo.errors import DataError
from edgeemo.mood import QUADRANT_SIGNS

__all__ = ["QUADRANT_SIGNS", "load_quadrants", "normalise_artist", "normalise_quadrant"]
AUDIO_DIR = "audio"
AUDIO_SUFFIXES = (".mp3", ".wav")
ID_COLUMNS = ("song", "id")
CONFIDENCE_COLUMN = "pquad"


def normalise_quadrant(value: str) -> str | None:
    """``'Q1'``/``'q1'``/``'1'`` -> ``'Q1'``; None for anything else."""
    v = value.strip().upper()
    if v in QUADRANT_SIGNS:
        return v
    if v in {"1", "2", "3", "4"}:
        return f"Q{v}"
    return None


def normalise_artist(name: str) -> str:
    """Artist name as a split group: whitespace collapsed, stripped, case-folded."""
    return " ".join(name.split()).casefold()


def _csv_path(root: Path, csv_name: str) -> tuple[Path, Path]:
    if root.is_file():
        return root.parent, root
    if not root.is_dir():
        raise DataError("quadrant dataset folder not found", path=root)
    path = root / csv_name
    if not path.is_file():
        raise DataError("quadrant annotation CSV is missing", path=path)
    return root, path


def _audio_for(root: Path, song_id: str, file_cell: str) -> Path:
    if file_cell:
        p = Path(file_cell)
        return p if p.is_absolute() else root / p
    for suffix in AUDIO_SUFFIXES:
        p = root / AUDIO_DIR / f"{song_id}{suffix}"
        if p.is_file():
            return p
    return root / AUDIO_DIR / f"{song_id}{AUDIO_SUFFIXES[0]}"


def load_quadrants(
    root: str | Path,
    *,
    magnitude: float = 1.0,
    use_confidence: bool = False,
    csv_name: str = "annotations.csv",
) -> SongSet:
    """Read a quadrant-labelled folder (or its CSV) into a :class:`SongSet` with ``Song.quadrant`` set.

    Targets are ``±magnitude`` per dimension; with ``use_confidence`` the magnitude is
    multiplied by the song's ``pquad`` (clipped to [0, 1]).
    """
    if not 0.0 < magnitude <= 1.0:
        raise DataError(f"magnitude must be in (0, 1], got {magnitude}")
    root, path = _csv_path(Path(root), csv_name)
    reader = csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines())
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    id_col = next((c for c in ID_COLUMNS if c in header), None)
    if id_col is None or "quadrant" not in header:
        raise DataError(
            f"quadrant CSV needs a song id column ({' or '.join(ID_COLUMNS)}) and a quadrant column", path=path
        )
    if use_confidence and CONFIDENCE_COLUMN not in header:
        raise DataError(f"use_confidence needs a {CONFIDENCE_COLUMN} column", path=path)
    songs: list[Song] = []
    skipped: list[str] = []
    seen: dict[str, int] = {}
    counts = dict.fromkeys(QUADRANT_SIGNS, 0)
    for line_no, row in enumerate(reader, start=2):
        song_id = (row.get(id_col) or "").strip()
        if not song_id:
            if any((v or "").strip() for v in row.values() if isinstance(v, str)):
                raise DataError(f"line {line_no}: empty song id", path=path)
            continue
        if song_id in seen:
            raise DataError(f"line {line_no}: song {song_id} appears twice (first on line {seen[song_id]})", path=path)
        seen[song_id] = line_no
        raw_q = row.get("quadrant") or ""
        quadrant = normalise_quadrant(raw_q)
        if quadrant is None:
            raise DataError(
                f"line {line_no}: song {song_id}: quadrant {raw_q.strip()!r} is not one of Q1..Q4", path=path
            )
        scale = magnitude
        if use_confidence:
            cell = (row.get(CONFIDENCE_COLUMN) or "").strip()
            try:
                conf = float(cell)
            except ValueError:
                raise DataError(
                    f"line {line_no}: song {song_id}: {CONFIDENCE_COLUMN} {cell!r} is not a number", path=path
                ) from None
            if not math.isfinite(conf):
                raise DataError(f"line {line_no}: song {song_id}: {CONFIDENCE_COLUMN} is {cell}", path=path)
            scale = magnitude * min(1.0, max(0.0, conf))
        audio = _audio_for(root, song_id, (row.get("file") or "").strip())
        if not audio.is_file():
            try:
                shown = audio.relative_to(root).as_posix()
            except ValueError:
                shown = str(audio)
            skipped.append(f"{song_id}: audio {shown} is missing")
            continue
        sv, sa = QUADRANT_SIGNS[quadrant]
        artist = normalise_artist(row.get("artist") or "")
        songs.append(
            Song(
                id=song_id,
                path=audio,
                valence=sv * scale,
                arousal=sa * scale,
                group=artist or song_id,
                quadrant=quadrant,
                source=root.name or "quadrants",
            )
        )
        counts[quadrant] += 1
    if not songs and not skipped:
        raise DataError("quadrant CSV has no rows", path=path)
    spread = "/".join(f"{q} {n}" for q, n in counts.items())
    conf_note = f", scaled by {CONFIDENCE_COLUMN}" if use_confidence else ""
    return SongSet(
        name=root.name or "quadrants",
        songs=songs,
        description=f"quadrants {path.name} ({len(songs)} songs: {spread}; targets ±{magnitude:g}{conf_note})",
        skipped=skipped,
    )
