"""Miniature datasets in the exact on-disk layouts edgeemo reads (DEAM, 4Q), written by the tests that need them.

Synthetic clips loosely follow their labels (major/minor notes, tempo, level), so a model
trained on them learns something; nothing here ships in the package.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

from edgeemo.data.deam import (
    AUDIO_DIR as DEAM_AUDIO_DIR,
)
from edgeemo.data.deam import (
    DYNAMIC_DIR,
    DYNAMIC_HOP_S,
    DYNAMIC_START_S,
    STATIC_DIR,
    STATIC_FILES,
    STATIC_HEADER_1,
    STATIC_HEADER_2,
    STATIC_SCALE,
)
from edgeemo.data.quadrants import AUDIO_DIR
from edgeemo.data.types import scale_to_unit
from edgeemo.errors import DataError
from edgeemo.mood import QUADRANT_SIGNS
from edgeemo.runtime.audio import write_wav

MOODS = {
    "Q1": ["Happy", "Cheerful", "Exuberant", "Fun", "Rousing", "Energetic"],
    "Q2": ["Aggressive", "Tense", "Angry", "Fierce", "Hostile", "Nervous"],
    "Q3": ["Sad", "Gloomy", "Melancholy", "Bittersweet", "Wistful", "Somber"],
    "Q4": ["Calm", "Relaxed", "Peaceful", "Gentle", "Soothing", "Serene"],
}
GENRES = ["Pop/Rock", "Electronic", "Jazz", "Classical", "International", "Blues", "R&B", "Country"]


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
    audio_dir = root / DEAM_AUDIO_DIR
    audio_dir.mkdir(parents=True, exist_ok=True)
    rows_1, rows_2 = [STATIC_HEADER_1], [STATIC_HEADER_2]
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


def write_miniature_quadrants(
    root: str | Path,
    n_per_quadrant: int = 3,
    n_artists: int = 4,
    seconds: float = 8.0,
    seed: int = 0,
    sample_rate: int = 22050,
) -> Path:
    """Write a small folder in the 4Q layout (``annotations.csv`` + ``audio/<id>.mp3``); returns ``root``."""
    if n_per_quadrant < 1 or n_artists < 1:
        raise DataError(f"need n_per_quadrant >= 1 and n_artists >= 1, got {n_per_quadrant}, {n_artists}")
    root = Path(root)
    (root / AUDIO_DIR).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    artists = [f"Artist {chr(ord('A') + i % 26)}{'' if i < 26 else i // 26}" for i in range(n_artists)]
    rows = []
    k = 0
    for quadrant, (sv, sa) in QUADRANT_SIGNS.items():
        for _ in range(n_per_quadrant):
            k += 1
            song_id = f"MT{k:010d}"
            pquad = float(rng.choice([0.5, 0.6, 2 / 3, 0.75, 0.8, 1.0]))
            v, a = sv * rng.uniform(0.3, 0.9), sa * rng.uniform(0.3, 0.9)
            audio = write_audio(root / AUDIO_DIR / song_id, synth_clip(v, a, seconds, sample_rate, rng), sample_rate)
            moods = rng.choice(MOODS[quadrant], size=int(rng.integers(2, 5)), replace=False)
            genres = rng.choice(GENRES, size=int(rng.integers(1, 3)), replace=False)
            rows.append(
                {
                    "song": song_id,
                    "quadrant": quadrant,
                    "pquad": repr(pquad),
                    "artist": artists[(k - 1) % n_artists],
                    "title": f"Song {k}",
                    "moods": "; ".join(moods),
                    "genres": "; ".join(genres),
                    "file": f"{AUDIO_DIR}/{audio.name}",
                }
            )
    path = root / "annotations.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return root
