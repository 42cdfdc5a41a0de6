"""The DEAM dataset (MediaEval Database for Emotional Analysis in Music) in its real on-disk layout.

Owns reading a DEAM tree into a :class:`SongSet`. The layout, rooted at ``DIR``::

    MEMD_audio/<song_id>.mp3
    annotations/annotations averaged per song/song_level/
        static_annotations_averaged_songs_1_2000.csv      song_id, valence_mean, ... (leading spaces)
        static_annotations_averaged_songs_2000_2058.csv   the same plus extra max/min columns
    annotations/annotations averaged per song/dynamic (per second annotations)/
        valence.csv, arousal.csv                          song_id,sample_15000ms,sample_15500ms,...

Static song-level ratings are on a 1..9 scale and map to [-1, 1] as ``(x - 5) / 4``.
The dynamic (2 Hz) annotations of the real dataset were collected on a continuous
[-1, 1] slider, so by default they are taken as they are (``dynamic_scale=(-1, 1)``);
their times are seconds from the start of the audio file (the first is 15 s).
The two static CSVs are also found directly in ``DIR`` or in ``DIR/annotations``, so a
folder holding only the annotation CSVs loads with ``require_audio=False``.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np

from edgeemo.data.types import DynamicLabels, Song, SongSet, scale_to_unit
from edgeemo.errors import DataError

STATIC_FILES = (
    "static_annotations_averaged_songs_1_2000.csv",
    "static_annotations_averaged_songs_2000_2058.csv",
)
AUDIO_DIR = "MEMD_audio"
AVERAGED_DIR = Path("annotations") / "annotations averaged per song"
STATIC_DIR = AVERAGED_DIR / "song_level"
DYNAMIC_DIR = AVERAGED_DIR / "dynamic (per second annotations)"
STATIC_SCALE = (1.0, 9.0)
AUDIO_SUFFIXES = (".mp3", ".wav")
DYNAMIC_START_S = 15.0
DYNAMIC_HOP_S = 0.5

_SAMPLE_COLUMN = re.compile(r"^sample_(\d+(?:\.\d+)?)ms$")
STATIC_HEADER_1 = "song_id, valence_mean, valence_std, arousal_mean, arousal_std"
STATIC_HEADER_2 = (
    "song_id, valence_mean, valence_std, valence_ max_mean, valence_max_std, valence_min_mean, valence_min_std,"
    " arousal_mean, arousal_std, arousal_max_mean, arousal_max_std, arousal_min_mean, arousal_min_std"
)


# ----------------------------------------------------------------------------- reading
def _norm_id(value: str) -> str:
    value = value.strip()
    return value[: value.index(".")] if re.fullmatch(r"\d+\.0*", value) else value


def _id_key(song_id: str) -> tuple[int, int | str]:
    return (0, int(song_id)) if song_id.isdigit() else (1, song_id)


def _number(value: str | None, column: str, song_id: str, line_no: int, path: Path) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(f"line {line_no}: song {song_id}: {column} {value!r} is not a number", path=path) from None
    if not math.isfinite(out):
        raise DataError(f"line {line_no}: song {song_id}: {column} is {out}", path=path)
    return out


def find_static_dir(root: str | Path) -> Path:
    """The folder holding the two static CSVs (the real tree, ``root/annotations`` or ``root`` itself)."""
    root = Path(root)
    candidates = (root / STATIC_DIR, root / "annotations", root)
    for folder in candidates:
        if any((folder / name).is_file() for name in STATIC_FILES):
            for name in STATIC_FILES:
                if not (folder / name).is_file():
                    raise DataError("DEAM static annotation CSV is missing", path=folder / name)
            return folder
    raise DataError(
        f"DEAM static annotation CSV is missing (also looked in {root / 'annotations'} and {root})",
        path=root / STATIC_DIR / STATIC_FILES[0],
    )


def _read_static(path: Path) -> dict[str, tuple[float, float]]:
    """``song_id -> (valence, arousal)`` on the 1..9 scale, checked; later rows win."""
    reader = csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines())
    reader.fieldnames = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in ("song_id", "valence_mean", "arousal_mean") if c not in reader.fieldnames]
    if missing:
        raise DataError(f"DEAM static CSV lacks column(s) {', '.join(missing)}", path=path)
    low, high = STATIC_SCALE
    out: dict[str, tuple[float, float]] = {}
    for line_no, row in enumerate(reader, start=2):
        song_id = _norm_id(row.get("song_id") or "")
        if not song_id:
            continue
        values = []
        for column in ("valence_mean", "arousal_mean"):
            x = _number(row.get(column), column, song_id, line_no, path)
            if not low <= x <= high:
                raise DataError(
                    f"line {line_no}: song {song_id}: {column} {x:g} is outside {low:g}..{high:g}", path=path
                )
            values.append(x)
        out[song_id] = (values[0], values[1])
    return out


def _read_dynamic(path: Path, scale: tuple[float, float]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``song_id -> (times_s, values in [-1, 1])`` from one dynamic CSV (ragged rows allowed)."""
    rows = csv.reader(path.read_text(encoding="utf-8-sig").splitlines())
    header = [h.strip() for h in next(rows, [])]
    if not header or header[0] != "song_id":
        raise DataError("DEAM dynamic CSV must start with a song_id column", path=path)
    times: list[float] = []
    for col in header[1:]:
        match = _SAMPLE_COLUMN.match(col)
        if col and not match:
            raise DataError(f"unexpected column {col!r}; expected sample_<ms>ms", path=path)
        times.append(float(match.group(1)) / 1000.0 if match else math.nan)
    low, high = scale
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for line_no, row in enumerate(rows, start=2):
        if not row or not row[0].strip():
            continue
        song_id = _norm_id(row[0])
        cells = row[1:]
        if len(cells) > len(times) and any(c.strip() for c in cells[len(times) :]):
            raise DataError(f"line {line_no}: song {song_id} has more values than the header has columns", path=path)
        t_out, v_out = [], []
        for t, cell in zip(times, cells, strict=False):  # ragged: short rows stop early
            if not cell.strip():
                continue
            if math.isnan(t):
                raise DataError(f"line {line_no}: song {song_id} has a value under an unnamed column", path=path)
            x = _number(cell, f"value at {t:g} s", song_id, line_no, path)
            if not low <= x <= high:
                raise DataError(
                    f"line {line_no}: song {song_id}: dynamic value {x:g} at {t:g} s is outside {low:g}..{high:g}",
                    path=path,
                )
            t_out.append(t)
            v_out.append(x)
        out[song_id] = (np.array(t_out, dtype=np.float64), scale_to_unit(np.array(v_out, dtype=np.float64), low, high))
    return out


def _find_dynamic(root: Path) -> tuple[Path, Path] | None:
    for folder in (root / DYNAMIC_DIR, root / "annotations" / DYNAMIC_DIR.name, root / DYNAMIC_DIR.name):
        valence, arousal = folder / "valence.csv", folder / "arousal.csv"
        if valence.is_file() or arousal.is_file():
            for p in (valence, arousal):
                if not p.is_file():
                    raise DataError("DEAM dynamic annotation CSV is missing (the other one is there)", path=p)
            return valence, arousal
    return None


def _merge_dynamic(
    valence: tuple[np.ndarray, np.ndarray] | None, arousal: tuple[np.ndarray, np.ndarray] | None
) -> DynamicLabels | None:
    if valence is None or arousal is None:
        return None
    times, iv, ia = np.intersect1d(valence[0], arousal[0], assume_unique=True, return_indices=True)
    if times.size == 0:
        return None
    return DynamicLabels(times=times, valence=valence[1][iv], arousal=arousal[1][ia])


def audio_path(root: str | Path, song_id: str) -> Path:
    """The song's audio file (``MEMD_audio/<id>.mp3``, or ``.wav``); the ``.mp3`` path when neither exists."""
    folder = Path(root) / AUDIO_DIR
    for suffix in AUDIO_SUFFIXES:
        p = folder / f"{song_id}{suffix}"
        if p.is_file():
            return p
    return folder / f"{song_id}{AUDIO_SUFFIXES[0]}"


def load_deam(
    root: str | Path,
    *,
    require_audio: bool = True,
    dynamic: bool = True,
    dynamic_scale: tuple[float, float] = (-1.0, 1.0),
) -> SongSet:
    """Read a DEAM tree into a :class:`SongSet` (labels in [-1, 1], group = song id).

    Songs whose audio is missing are listed in ``skipped`` and left out, unless
    ``require_audio=False`` (annotations-only use: they keep their would-be path).
    ``dynamic_scale`` is the native range of the dynamic CSVs ([-1, 1] in real DEAM).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError("DEAM folder not found", path=root)
    static_dir = find_static_dir(root)
    static: dict[str, tuple[float, float]] = {}
    for name in STATIC_FILES:  # the later file wins for ids present in both
        static.update(_read_static(static_dir / name))
    if not static:
        raise DataError("DEAM static annotation CSVs hold no songs", path=static_dir)
    dyn_v: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    dyn_a: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if dynamic:
        found = _find_dynamic(root)
        if found is not None:
            dyn_v, dyn_a = _read_dynamic(found[0], dynamic_scale), _read_dynamic(found[1], dynamic_scale)
    low, high = STATIC_SCALE
    songs: list[Song] = []
    skipped: list[str] = []
    for song_id in sorted(static, key=_id_key):
        path = audio_path(root, song_id)
        if require_audio and not path.is_file():
            skipped.append(f"{song_id}: audio {AUDIO_DIR}/{path.name} is missing")
            continue
        v, a = static[song_id]
        songs.append(
            Song(
                id=song_id,
                path=path,
                valence=float(scale_to_unit(v, low, high)),
                arousal=float(scale_to_unit(a, low, high)),
                group=song_id,
                dynamic=_merge_dynamic(dyn_v.get(song_id), dyn_a.get(song_id)),
                source="deam",
            )
        )
    n_dynamic = sum(s.dynamic is not None for s in songs)
    return SongSet(
        name="deam",
        songs=songs,
        description=f"DEAM ({len(songs)} songs, static 1..9 -> [-1,1], dynamic 2 Hz for {n_dynamic} songs)",
        skipped=skipped,
    )
