"""Dataset autodetection, loading by kind, and the ``edgeemo data check`` report.

Owns telling a DEAM folder, a quadrant folder and a CSV manifest apart
(:func:`detect_kind`), dispatching to their loaders (:func:`load_dataset`, used by the
training CLI), and summarising a dataset (:func:`check_dataset` -> :class:`DatasetReport`):
song and skip counts, audio durations read from file headers, label ranges, dynamic
label and group counts, audio files that will not open and excerpts (``start_s``/``end_s``)
that do not lie inside their audio.
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeemo.data.deam import AUDIO_DIR as DEAM_AUDIO_DIR
from edgeemo.data.deam import AVERAGED_DIR, STATIC_DIR, STATIC_FILES, load_deam
from edgeemo.data.manifest import read_manifest
from edgeemo.data.quadrants import QUADRANT_SIGNS, load_quadrants
from edgeemo.data.types import SongSet
from edgeemo.errors import AudioError, DataError
from edgeemo.runtime.audio import audio_info

KINDS = ("deam", "quadrants", "manifest")
QUADRANT_CSV = "annotations.csv"
MANIFEST_CSV = "manifest.csv"
MAX_LISTED = 10

_EXPECTED = (
    "expected a DEAM folder (MEMD_audio/, annotations/annotations averaged per song/ or the two"
    " static_annotations_averaged_songs_*.csv), a quadrant folder (annotations.csv with a quadrant column),"
    " a folder with manifest.csv, or a .csv manifest"
)


def _csv_header(path: Path) -> list[str]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            for row in csv.reader(f):
                if row and not row[0].lstrip().startswith("#"):
                    return [h.strip().lower() for h in row]
    except (OSError, UnicodeDecodeError):
        return []
    return []


def _is_deam_dir(path: Path) -> bool:
    return (
        (path / DEAM_AUDIO_DIR).is_dir()
        or (path / AVERAGED_DIR).is_dir()
        or any((folder / name).is_file() for folder in (path, path / "annotations") for name in STATIC_FILES)
    )


def detect_kind(path: str | Path) -> str:
    """``"deam"``, ``"quadrants"`` or ``"manifest"`` for a folder or CSV file; DataError when unclear."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DataError(f"cannot tell what dataset this is: {_EXPECTED}", path=path)
        header = _csv_header(path)
        if "quadrant" in header:
            return "quadrants"
        if "song_id" in header and "valence_mean" in header:
            return "deam"
        return "manifest"
    if not path.is_dir():
        raise DataError("no such file or folder", path=path)
    if _is_deam_dir(path):
        return "deam"
    if (path / QUADRANT_CSV).is_file() and "quadrant" in _csv_header(path / QUADRANT_CSV):
        return "quadrants"
    if (path / MANIFEST_CSV).is_file():
        return "manifest"
    raise DataError(f"cannot tell what dataset this is: {_EXPECTED}", path=path)


def _deam_root(csv_file: Path) -> Path:
    """The DEAM root for one of its static CSVs (``.../annotations/annotations averaged per song/song_level/x.csv``)."""
    folder = csv_file.parent
    if folder.name == STATIC_DIR.name and folder.parent.name == AVERAGED_DIR.name:
        return folder.parents[2]
    if folder.name == "annotations":
        return folder.parent
    return folder


def load_dataset(path: str | Path, kind: str | None = None, **opts: Any) -> SongSet:
    """Load any supported dataset; ``kind`` (one of :data:`KINDS`) skips detection, ``opts`` go to the loader."""
    path = Path(path)
    kind = kind or detect_kind(path)
    if kind == "deam":
        return load_deam(_deam_root(path) if path.is_file() else path, **opts)
    if kind == "quadrants":
        if path.is_file():
            return load_quadrants(path.parent, csv_name=path.name, **opts)
        return load_quadrants(path, **opts)
    if kind == "manifest":
        return read_manifest(path / MANIFEST_CSV if path.is_dir() else path, **opts)
    raise DataError(f"unknown dataset kind {kind!r}; expected one of {', '.join(KINDS)}")


@dataclass
class DatasetReport:
    """What ``edgeemo data check`` found in a dataset."""

    kind: str
    path: Path
    name: str = ""
    description: str = ""
    n_songs: int = 0
    n_skipped: int = 0
    skipped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # audio files that exist but will not open
    excerpts: list[str] = field(default_factory=list)  # start_s/end_s outside their audio file
    total_hours: float = 0.0
    duration_min_s: float | None = None
    duration_median_s: float | None = None
    duration_max_s: float | None = None
    valence_range: tuple[float, float, float] | None = None  # (min, max, mean) in [-1, 1]
    arousal_range: tuple[float, float, float] | None = None
    n_dynamic: int = 0
    n_groups: int = 0
    quadrant_counts: dict[str, int] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def n_unreadable(self) -> int:
        return len(self.problems)

    @property
    def ok(self) -> bool:
        """True when there are usable songs, every audio file present opens and every excerpt lies inside it."""
        return self.n_songs > 0 and not self.problems and not self.excerpts

    def text(self) -> str:
        """A readable multi-line summary."""
        lines = [f"{self.kind} dataset at {self.path}"]
        if self.description:
            lines.append(f"  {self.description}")
        lines.append(
            f"  songs: {self.n_songs} usable, {self.n_skipped} skipped, {self.n_unreadable} unreadable,"
            f" {self.n_groups} groups"
        )
        if self.duration_min_s is not None:
            lines.append(
                f"  audio: {self.total_hours:.2f} h total; per song min {self.duration_min_s:.1f} s,"
                f" median {self.duration_median_s:.1f} s, max {self.duration_max_s:.1f} s"
            )
        for label, rng in (("valence", self.valence_range), ("arousal", self.arousal_range)):
            if rng is not None:
                lines.append(f"  {label}: min {rng[0]:+.3f}, max {rng[1]:+.3f}, mean {rng[2]:+.3f}")
        if self.kind == "deam" or self.n_dynamic:
            lines.append(f"  dynamic labels: {self.n_dynamic} songs")
        if self.quadrant_counts is not None:
            lines.append("  quadrants: " + ", ".join(f"{q} {n}" for q, n in self.quadrant_counts.items()))
        for title, items in (
            ("skipped", self.skipped),
            ("unreadable audio", self.problems),
            ("excerpts outside their audio", self.excerpts),
        ):
            if items:
                lines.append(f"  {title} ({len(items)}):")
                lines.extend(f"    {item}" for item in items[:MAX_LISTED])
                if len(items) > MAX_LISTED:
                    lines.append(f"    ... and {len(items) - MAX_LISTED} more")
        lines.extend(f"  note: {note}" for note in self.notes)
        if self.ok:
            lines.append("  status: OK")
        elif self.problems or self.excerpts:
            why = [f"{self.n_unreadable} audio file(s) will not open"] if self.problems else []
            why += [f"{len(self.excerpts)} excerpt(s) outside their audio"] if self.excerpts else []
            lines.append(f"  status: NOT OK ({'; '.join(why)})")
        else:
            lines.append("  status: NOT OK (no usable songs)")
        return "\n".join(lines)


def _stats(values: list[float]) -> tuple[float, float, float] | None:
    if not values:
        return None
    return min(values), max(values), sum(values) / len(values)


END_TOLERANCE_S = 0.5  # an end_s this far past the audio's end is rounding, not a wrong excerpt


def excerpt_problem(start_s: float, end_s: float | None, duration_s: float) -> str | None:
    """Why ``[start_s, end_s)`` does not fit in audio of ``duration_s`` seconds, or None when it does.

    ``start_s`` must be before the end of the audio; ``end_s`` may overshoot it by at most
    :data:`END_TOLERANCE_S` (the excerpt is then cut at the end of the audio).
    """
    if start_s < 0:
        return f"start_s {start_s:g} is negative"
    if start_s >= duration_s:
        return f"start_s {start_s:g} is past the end of the audio ({duration_s:.3f} s)"
    if end_s is not None and end_s > duration_s + END_TOLERANCE_S:
        return f"end_s {end_s:g} is past the end of the audio ({duration_s:.3f} s)"
    return None


def check_dataset(path: str | Path) -> DatasetReport:
    """Detect, load and summarise a dataset; raises DataError only when it cannot be loaded at all."""
    path = Path(path)
    kind = detect_kind(path)
    songs = load_dataset(path, kind)
    report = DatasetReport(
        kind=kind,
        path=path,
        name=songs.name,
        description=songs.description,
        n_songs=len(songs),
        n_skipped=len(songs.skipped),
        skipped=list(songs.skipped),
    )
    if kind == "deam":
        root = _deam_root(path) if path.is_file() else path
        if not (root / DEAM_AUDIO_DIR).is_dir():
            report.notes.append(f"no {DEAM_AUDIO_DIR}/ folder in {root}: annotations only")
    durations: list[float] = []
    headers: dict[Path, float | AudioError] = {}
    for song in songs.songs:
        if song.path not in headers:
            try:
                headers[song.path] = audio_info(song.path)[1]
            except AudioError as exc:
                headers[song.path] = exc
                report.problems.append(f"{song.id}: {exc}")
        info = headers[song.path]
        if isinstance(info, AudioError):
            continue
        problem = excerpt_problem(song.start_s, song.end_s, info)
        if problem:
            report.excerpts.append(f"{song.id}: {problem}")
            continue
        end = info if song.end_s is None else min(song.end_s, info)
        durations.append(end - song.start_s)
    if durations:
        report.total_hours = sum(durations) / 3600.0
        report.duration_min_s = min(durations)
        report.duration_median_s = float(statistics.median(durations))
        report.duration_max_s = max(durations)
    report.valence_range = _stats([s.valence for s in songs.songs])
    report.arousal_range = _stats([s.arousal for s in songs.songs])
    report.n_dynamic = sum(s.dynamic is not None for s in songs.songs)
    report.n_groups = len({s.group for s in songs.songs})
    if kind == "quadrants" or any(s.quadrant for s in songs.songs):
        report.quadrant_counts = {q: sum(s.quadrant == q for s in songs.songs) for q in QUADRANT_SIGNS}
    return report
