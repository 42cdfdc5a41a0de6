"""The DEAM dataset (MediaEval Database for Emotional Analysis in Music) in its real on-disk layout.

Owns reading a DEAM tree into a :class:`SongSet` and writing a miniature one for tests
and demos. The layout, rooted at ``DIR``::

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
import soundfile as sf

from edgeemo.data.types import DynamicLabels, Song, SongSet, scale_to_unit
from edgeemo.errors import DataError
from edgeemo.runtime.audio import write_wav

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
_STATIC_HEADER_1 = "song_id, valence_mean, valence_std, arousal_mean, arousal_std"
_STATIC_HEADER_2 = (
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


# ----------------------------------------------------------------------------- miniature tree
def synth_clip(
    valence: float, arousal: float, seconds: float, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """A short synthetic clip loosely following (valence, arousal) in [-1, 1]: major/minor notes, tempo, noise.

    For miniature test/demo trees only; float32 mono, peak well below 1.
    """
    n = max(1, round(seconds * sample_rate))
    steps = [0, 2, 4, 5, 7, 9, 11] if valence >= 0 else [0, 2, 3, 5, 7, 8, 10]
    base = 220.0 * 2.0 ** (0.5 * valence)
    note = max(1, int(sample_rate / (1.5 + 2.5 * (arousal + 1.0))))
    out = np.zeros(n, dtype=np.float64)
    t = np.arange(note) / sample_rate
    env = np.exp(-t * (2.0 + 3.0 * (arousal + 1.0)))
    for start in range(0, n, note):
        f = base * 2.0 ** (rng.choice(steps) / 12.0 + int(rng.integers(0, 2)))
        m = min(note, n - start)
        out[start : start + m] = np.sin(2 * np.pi * f * t[:m]) * env[:m]
    level = 0.15 + 0.1 * (arousal + 1.0)
    noise = rng.standard_normal(n) * 0.01 * (1.0 + arousal)
    return (level * out + noise).astype(np.float32)


def write_audio(path_stem: Path, signal: np.ndarray, sample_rate: int) -> Path:
    """Write ``<stem>.mp3`` when this libsndfile can encode MP3, else ``<stem>.wav``; returns the path."""
    mp3 = path_stem.with_suffix(".mp3")
    if "MP3" in sf.available_formats():
        try:
            sf.write(str(mp3), np.clip(signal, -1.0, 1.0).astype(np.float32), sample_rate, format="MP3")
            return mp3
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
            mp3.unlink(missing_ok=True)
    wav = path_stem.with_suffix(".wav")
    write_wav(wav, signal, sample_rate)
    return wav


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))  # the real files use CRLF


def write_miniature_deam(
    root: str | Path,
    n_songs: int = 6,
    sample_rate: int = 16000,
    seconds: float = 20.0,
    seed: int = 0,
    with_dynamic: bool = True,
) -> Path:
    """Write a small DEAM tree in the exact real format (for tests and demos); returns ``root``.

    About a third of the songs get ids >= 2001 (the second static CSV with its extra
    columns, longer "full songs"); the rest ids below 2000 with ``seconds`` of audio.
    Dynamic rows run from 15 s at 2 Hz to the end of each clip, so rows are ragged.
    """
    if n_songs < 1:
        raise DataError(f"n_songs must be at least 1, got {n_songs}")
    if with_dynamic and seconds <= DYNAMIC_START_S:
        raise DataError(f"with_dynamic needs seconds > {DYNAMIC_START_S:g} (DEAM dynamic labels start at 15 s)")
    root = Path(root)
    rng = np.random.default_rng(seed)
    n_high = n_songs // 3
    ids = [str(2 + 3 * i) for i in range(n_songs - n_high)] + [str(2001 + i) for i in range(n_high)]
    audio_dir = root / AUDIO_DIR
    audio_dir.mkdir(parents=True, exist_ok=True)
    rows_1, rows_2 = [_STATIC_HEADER_1], [_STATIC_HEADER_2]
    dyn: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for k, song_id in enumerate(ids):
        v, a = (round(float(x), 1) for x in rng.uniform(1.6, 8.4, size=2))
        vs, as_ = (round(float(x), 2) for x in rng.uniform(0.4, 2.0, size=2))
        high = int(song_id) >= 2000
        duration = seconds + (5.0 * (k - (n_songs - n_high) + 1) if high else 0.0)
        vu, au = float(scale_to_unit(v, *STATIC_SCALE)), float(scale_to_unit(a, *STATIC_SCALE))
        write_audio(audio_dir / song_id, synth_clip(vu, au, duration, sample_rate, rng), sample_rate)
        if high:
            extra = []
            for mean in (v, a):  # max_mean, max_std, min_mean, min_std around the mean
                up, down, s1, s2 = (
                    rng.uniform(0.5, 2.5),
                    rng.uniform(0.5, 2.5),
                    rng.uniform(0.4, 1.5),
                    rng.uniform(0.4, 1.5),
                )
                extra.append(
                    [min(9.0, round(mean + up, 1)), round(s1, 2), max(1.0, round(mean - down, 1)), round(s2, 2)]
                )
            cells = [v, vs, *extra[0], a, as_, *extra[1]]
        else:
            cells = [v, vs, a, as_]
        (rows_2 if high else rows_1).append(",".join([song_id, *(f"{c:g}" for c in cells)]))
        if with_dynamic:
            times = np.arange(DYNAMIC_START_S, duration - 1e-9, DYNAMIC_HOP_S)
            phase = rng.uniform(0, 2 * np.pi, size=2)
            wobble = np.sin(2 * np.pi * times / 9.0 + phase[:, None]) * 0.15
            dv = np.clip(vu + wobble[0] + rng.normal(0, 0.02, times.size), -1, 1)
            da = np.clip(au + wobble[1] + rng.normal(0, 0.02, times.size), -1, 1)
            dyn[song_id] = (times, dv, da)
    _write_lines(root / STATIC_DIR / STATIC_FILES[0], rows_1)
    _write_lines(root / STATIC_DIR / STATIC_FILES[1], rows_2)
    if with_dynamic:
        width = max(len(t) for t, _, _ in dyn.values())
        header = ",".join(
            ["song_id"] + [f"sample_{round(1000 * (DYNAMIC_START_S + i * DYNAMIC_HOP_S))}ms" for i in range(width)]
        )
        for which, name in ((1, "valence.csv"), (2, "arousal.csv")):
            lines = [header]
            for k, (song_id, item) in enumerate(dyn.items()):
                cells = [f"{x:.4f}" for x in item[which]]
                if k % 2 == 0:  # pad with trailing empty cells; odd rows simply stop early
                    cells += [""] * (width - len(cells))
                lines.append(",".join([song_id, *cells]))
            _write_lines(root / DYNAMIC_DIR / name, lines)
    return root
