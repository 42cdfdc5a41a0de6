"""The built-in emotion corpus: procedurally synthesised music whose cues follow music psychology.

The embedded default dataset, so every command runs on a fresh machine with no
downloads. Each song draws valence and arousal independently in [-1, 1]; its musical
cues are noisy functions of those targets, after the cue literature (Juslin &
Laukka 2003; Gabrielsson & Lindström 2010; Eerola et al.):

- arousal: tempo, loudness, note density, spectral brightness, articulation
  (staccato vs legato), percussion activity;
- valence: mode (major/minor, drawn with a valence-dependent probability),
  consonance vs dissonance (added clusters, detuning), pitch register, harmonic
  progression.

Some cues are shared (brightness leans a little on valence, register a little on
arousal), and nuisance factors vary independently of the targets (key, instrument,
reverb, melody contour), so the task is learnable but not trivial. Song ``i`` of
seed ``s`` is generated from ``np.random.default_rng([s, i])`` alone: deterministic
and independent of the corpus size.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgeemo.data.manifest import read_manifest, write_manifest
from edgeemo.data.types import SongSet
from edgeemo.errors import DataError
from edgeemo.runtime.audio import write_wav

SYNTH_VERSION = 1

_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
_MINOR = np.array([0, 2, 3, 5, 7, 8, 10])
# progressions as scale degrees (0-based) of chord roots
_MAJOR_PROGS = ([0, 3, 4, 0], [0, 5, 3, 4], [0, 4, 5, 3], [3, 4, 0, 0])
_MINOR_PROGS = ([0, 5, 6, 0], [0, 3, 4, 0], [0, 6, 5, 4], [0, 5, 3, 4])


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


@dataclass(frozen=True)
class SynthParams:
    """The cues actually used for one song."""

    tempo_bpm: float
    loudness_db: float  # target RMS level, dBFS
    subdivision: int  # melody notes per beat
    rolloff: float  # harmonic amplitude ~ k**-rolloff (lower = brighter)
    articulation: float  # sounding fraction of each note's slot (low = staccato)
    percussion: float  # 0..1 drum activity
    major: bool
    major_prob: float
    dissonance: float  # 0..1
    register: float  # semitones relative to the middle register
    progression: tuple[int, ...]
    tonic: int  # nuisance: key offset in semitones
    timbre: int  # nuisance: instrument family
    reverb: float  # nuisance: reverb mix


def sample_targets(seed: int, index: int) -> tuple[float, float]:
    """The (valence, arousal) of song ``index`` in corpus ``seed``, independent and uniform in [-1, 1]."""
    v, a = np.random.default_rng([seed, index, 0]).uniform(-1.0, 1.0, 2)
    return float(v), float(a)


def cues_for(valence: float, arousal: float, rng: np.random.Generator) -> SynthParams:
    """Noisy cue values for the targets (see the module docstring for the mapping)."""
    n = rng.normal
    major_prob = _sigmoid(3.0 * valence + n(0, 0.6))
    major = bool(rng.random() < major_prob)
    progs = _MAJOR_PROGS if major else _MINOR_PROGS
    return SynthParams(
        tempo_bpm=float(np.clip(105 + 45 * arousal + n(0, 10), 55, 190)),
        loudness_db=float(np.clip(-21 + 7 * arousal + n(0, 1.5), -32, -11)),
        subdivision=int(np.clip(round(2 + 1.6 * arousal + n(0, 0.5)), 1, 4)),
        rolloff=float(np.clip(1.7 - 0.75 * arousal - 0.2 * valence + n(0, 0.15), 0.5, 2.8)),
        articulation=float(np.clip(0.75 - 0.35 * arousal + n(0, 0.08), 0.2, 1.0)),
        percussion=float(np.clip(0.5 + 0.55 * arousal + n(0, 0.2), 0.0, 1.0)),
        major=major,
        major_prob=major_prob,
        dissonance=float(np.clip(0.45 - 0.45 * valence + n(0, 0.12), 0.0, 1.0)),
        register=float(np.clip(7 * valence + 2 * arousal + n(0, 1.5), -11, 11)),
        progression=tuple(progs[int(rng.integers(len(progs)))]),
        tonic=int(rng.integers(-3, 4)),  # within a few semitones, so register stays a cue
        timbre=int(rng.integers(3)),
        reverb=float(rng.uniform(0.0, 0.35)),
    )


def _midi_hz(m: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(m, dtype=np.float64) - 69.0) / 12.0)


def _tone(freq: float, dur: float, sr: int, rolloff: float, timbre: int, detune_cents: float = 0.0) -> np.ndarray:
    """One note: additive harmonics with an ADSR-like envelope; timbre 0 pad, 1 pluck, 2 organ."""
    n = max(8, int(dur * sr))
    t = np.arange(n) / sr
    nh = int(max(1, min(10, (sr / 2 - 200) // max(freq, 1.0))))
    k = np.arange(1, nh + 1)[:, None]
    amps = k[:, 0] ** -rolloff
    if timbre == 2:
        amps = amps * np.where(k[:, 0] % 2 == 1, 1.0, 0.35)  # hollow, organ-like
    f = freq * 2.0 ** (detune_cents / 1200.0)
    wave = (amps[:, None] * np.sin(2 * np.pi * f * k * t)).sum(0) / amps.sum()
    attack = min(0.02 if timbre == 1 else 0.06, dur / 3)
    env = np.minimum(1.0, t / max(attack, 1e-3))
    if timbre == 1:
        env *= np.exp(-t * 5.0)
    release = min(0.05, dur / 4)
    env *= np.clip((dur - t) / release, 0.0, 1.0)
    return (wave * env).astype(np.float32)


def _drums(sr: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    t = np.arange(int(0.25 * sr)) / sr
    kick = np.sin(2 * np.pi * (55 + 60 * np.exp(-t * 30)) * t) * np.exp(-t * 18)
    noise = rng.standard_normal(t.size)
    snare = (0.7 * noise + 0.5 * np.sin(2 * np.pi * 190 * t)) * np.exp(-t * 25)
    hat = np.diff(noise, prepend=0.0) * np.exp(-t * 90) * 0.5
    return {"kick": kick.astype(np.float32), "snare": snare.astype(np.float32), "hat": hat.astype(np.float32)}


def _add(buf: np.ndarray, start: int, sig: np.ndarray, gain: float) -> None:
    if start >= buf.size:
        return
    end = min(buf.size, start + sig.size)
    buf[start:end] += gain * sig[: end - start]


def render_song(
    seed: int, index: int, duration_s: float = 12.0, sample_rate: int = 16000
) -> tuple[np.ndarray, float, float, SynthParams]:
    """Synthesise song ``index`` of corpus ``seed``: ``(audio float32, valence, arousal, cues)``."""
    _check_args(1, duration_s, sample_rate)
    valence, arousal = sample_targets(seed, index)
    rng = np.random.default_rng([seed, index, 1])
    p = cues_for(valence, arousal, rng)
    sr = sample_rate
    out = np.zeros(int(duration_s * sr) + sr, dtype=np.float32)
    beat = 60.0 / p.tempo_bpm
    scale = _MAJOR if p.major else _MINOR
    base = 60 + p.tonic + p.register  # middle register around C4, shifted
    chord_beats = 2 if p.tempo_bpm < 100 else 4  # a chord every ~1-2.4 s: each 4 s window hears 2+
    n_beats = int(duration_s / beat) + 2
    detune = 18.0 * p.dissonance
    # harmony: triads on the progression, plus a dissonant cluster tone with probability ~ dissonance
    for c in range(0, n_beats, chord_beats):
        degree = p.progression[(c // chord_beats) % len(p.progression)]
        root = base - 12 + scale[degree % 7]
        third = base - 12 + scale[(degree + 2) % 7] + (12 if (degree + 2) >= 7 else 0)
        fifth = base - 12 + scale[(degree + 4) % 7] + (12 if (degree + 4) >= 7 else 0)
        notes = [root, third, fifth, root - 12]
        if rng.random() < p.dissonance:
            notes.append(root + rng.choice([1, 6, 11]))  # minor second, tritone, major seventh
        start = int(c * beat * sr)
        dur = chord_beats * beat * (0.95 if p.articulation > 0.5 else 0.6)
        for j, m in enumerate(notes):
            cents = detune * (1 if j % 2 else -1)
            _add(out, start, _tone(float(_midi_hz(m)), dur, sr, p.rolloff + 0.3, 0, cents), 0.12)
    # melody: scale steps (random contour), density from subdivision, articulation from note length
    step = beat / p.subdivision
    degree = 7
    t = 0.0
    while t < duration_s:
        degree = int(np.clip(degree + rng.choice([-2, -1, -1, 0, 1, 1, 2]), 2, 13))
        m = base + 12 * (degree // 7) + scale[degree % 7]
        if rng.random() < 0.5 * p.dissonance:
            m += 1  # chromatic, out-of-key note
        if rng.random() > 0.12:  # occasional rests
            _add(out, int(t * sr), _tone(float(_midi_hz(m)), step * p.articulation, sr, p.rolloff, p.timbre), 0.22)
        t += step
    # percussion: kick/snare backbeat, hats on subdivisions, all scaled by activity
    if p.percussion > 0.15:
        drums = _drums(sr, rng)
        for b in range(n_beats):
            s = int(b * beat * sr)
            _add(out, s, drums["kick" if b % 2 == 0 else "snare"], 0.5 * p.percussion)
            for h in range(p.subdivision):
                _add(out, s + int(h * step * sr), drums["hat"], 0.25 * p.percussion**2)
    out = out[: int(duration_s * sr)]
    if p.reverb > 0.02:  # nuisance: exponentially decaying noise tail
        n_ir = int(0.4 * sr)
        ir = rng.standard_normal(n_ir) * np.exp(-np.arange(n_ir) / (0.12 * sr))
        ir /= np.sqrt((ir**2).sum())
        size = 1 << int(np.ceil(np.log2(out.size + n_ir)))
        wet = np.fft.irfft(np.fft.rfft(out, size) * np.fft.rfft(ir, size), size)[: out.size]
        out = ((1 - p.reverb) * out + p.reverb * wet).astype(np.float32)
    rms = float(np.sqrt(np.mean(out**2))) + 1e-9
    out *= 10 ** (p.loudness_db / 20) / rms
    peak = float(np.max(np.abs(out)))
    if peak > 0.89:  # never clip: loud songs are limited to -1 dBFS peak
        out *= 0.89 / peak
    return out.astype(np.float32), valence, arousal, p


def _check_args(n: int, duration_s: float, sample_rate: int) -> None:
    if n < 1:
        raise DataError(f"the built-in corpus needs at least 1 song, got n={n}")
    if duration_s < 5.0:
        raise DataError(f"built-in corpus clips must be at least 5 s long (one window is ~4 s), got {duration_s}")
    if sample_rate < 8000:
        raise DataError(f"sample rate {sample_rate} Hz is too low for the built-in corpus (need >= 8000)")


def _clip_name(seed: int, index: int) -> str:
    return f"synth_{seed}_{index:05d}.wav"


def _render_to(args: tuple[Path, int, int, float, int]) -> dict:
    clips, seed, i, duration_s, sr = args
    path = clips / _clip_name(seed, i)
    audio, v, a, _ = render_song(seed, i, duration_s, sr)
    if not path.is_file():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.wav")
        write_wav(tmp, audio, sr)
        tmp.replace(path)
    return {"path": str(path), "valence": round(v, 6), "arousal": round(a, 6), "id": path.stem, "artist": path.stem}


def write_corpus(
    out_dir: str | Path,
    n: int = 400,
    seed: int = 0,
    duration_s: float = 12.0,
    sample_rate: int = 16000,
    progress: bool = False,
    workers: int | None = None,
) -> Path:
    """Write ``n`` clips to ``out_dir/clips/`` plus ``manifest.csv`` and ``corpus.json``; returns the manifest.

    Clips already present (from an interrupted run with the same parameters) are kept.
    The manifest is written last, atomically, so its presence means the corpus is complete.
    """
    _check_args(n, duration_s, sample_rate)
    out_dir = Path(out_dir)
    clips = out_dir / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    meta = {"n": n, "seed": seed, "duration_s": duration_s, "sample_rate": sample_rate, "version": SYNTH_VERSION}
    info = out_dir / "corpus.json"
    if info.is_file() and json.loads(info.read_text()) != meta:
        for stale in clips.glob("synth_*.wav"):  # other parameters: existing clips are not reusable
            stale.unlink()
    info.write_text(json.dumps(meta, indent=2))
    jobs = [(clips, seed, i, duration_s, sample_rate) for i in range(n)]
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    rows: list[dict] = []
    if workers > 1 and n > 4:
        with ProcessPoolExecutor(workers) as pool:
            for k, row in enumerate(pool.map(_render_to, jobs, chunksize=4), 1):
                rows.append(row)
                if progress and (k % 10 == 0 or k == n):
                    print(f"\rsynthesising {k}/{n}", end="", file=sys.stderr, flush=True)
    else:
        for k, job in enumerate(jobs, 1):
            rows.append(_render_to(job))
            if progress and (k % 10 == 0 or k == n):
                print(f"\rsynthesising {k}/{n}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return write_manifest(out_dir / "manifest.csv", rows, scale=(-1.0, 1.0))


def builtin_corpus(
    n: int = 400,
    seed: int = 0,
    duration_s: float = 12.0,
    sample_rate: int = 16000,
    cache_dir: str | Path | None = None,
) -> SongSet:
    """The built-in corpus as a SongSet, generated once into the cache and reused after."""
    _check_args(n, duration_s, sample_rate)
    from edgeemo.data.windows import default_cache_dir

    key = hashlib.sha256(json.dumps([n, seed, duration_s, sample_rate, SYNTH_VERSION]).encode()).hexdigest()[:12]
    root = Path(cache_dir or default_cache_dir()) / f"builtin-{key}"
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        if root.exists() and not (root / "corpus.json").is_file():
            shutil.rmtree(root)
        print(f"generating the built-in corpus ({n} clips x {duration_s:g} s) into {root}", file=sys.stderr)
        write_corpus(root, n=n, seed=seed, duration_s=duration_s, sample_rate=sample_rate, progress=True)
    songs = read_manifest(manifest, name="builtin")
    if len(songs.songs) != n:
        raise DataError(f"built-in corpus cache {root} is incomplete ({len(songs.songs)}/{n}); delete it to rebuild")
    songs.description = (
        f"built-in synthesised emotion corpus: {n} clips x {duration_s:g} s at {sample_rate} Hz, seed {seed}, "
        f"edgeemo synth v{SYNTH_VERSION}"
    )
    return songs


def params_dict(p: SynthParams) -> dict:
    return asdict(p)
