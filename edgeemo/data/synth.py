"""The built-in emotion corpus: procedurally synthesised music labelled with valence/arousal (pure numpy).

Owns three things:

* the **cue model** (:func:`cues_for`): how a (valence, arousal) target becomes musical
  cues, after the music-psychology cue literature (Juslin & Laukka 2003; Gabrielsson &
  Lindström 2010; Eerola et al.). Arousal drives tempo, loudness, note density,
  spectral brightness, articulation (staccato vs legato) and percussion activity;
  valence drives mode (major vs minor, a continuous probability), consonance vs
  dissonance (added clusters/tritones, detuning), register and the chord progression.
  Every cue is ``f(target) + noise``, some cues are shared between the two dimensions,
  and nuisance variation independent of the targets (key, instruments, reverb, gain,
  melody contour, where the excerpt starts) keeps the task learnable but not trivial;
* the **synthesiser** (:func:`render_song`): band-limited wavetable instruments with
  ADSR envelopes (pad, organ, pluck, e-piano, lead, flute, bell, bass), chords that
  change every 1-2 s, a melody, kick/snare/hat from sines and noise, a tone filter and
  an FFT reverb. Song ``i`` of seed ``s`` is drawn from ``np.random.default_rng([s, i])``
  alone, so it is bit-identical on every run and independent of the corpus size;
* **corpora on disk** (:func:`write_corpus`, :func:`builtin_corpus`): WAV clips plus a
  ``manifest.csv`` (scale -1..1) and ``corpus.json``, cached under ``$EDGEEMO_CACHE``
  (default ``~/.cache/edgeemo``) so every edgeemo command runs with no downloads.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from edgeemo.data.manifest import read_manifest, write_manifest
from edgeemo.data.types import SongSet
from edgeemo.errors import DataError
from edgeemo.runtime.audio import audio_info, write_wav

SYNTH_VERSION = 1
MIN_DURATION_S = 5.0
MIN_SAMPLE_RATE = 8000
PEAK_DBFS = -1.0  # peak of the loudest possible clip; quieter songs sit lower (the loudness cue)

_TABLE = 2048  # wavetable length (power of two)
_MAX_HARMONICS = 48
_FRAC_BITS = 20  # fractional bits of the oscillator phase
_MAJOR_SCALE = np.array([0, 2, 4, 5, 7, 9, 11])
_MINOR_SCALE = np.array([0, 2, 3, 5, 7, 8, 10])
_QUALITY = {"maj": (0, 4, 7), "min": (0, 3, 7), "dim": (0, 3, 6)}
_MAJOR_PROGRESSIONS: dict[str, tuple[tuple[int, str], ...]] = {
    "I-IV-V-I": ((0, "maj"), (5, "maj"), (7, "maj"), (0, "maj")),
    "I-V-vi-IV": ((0, "maj"), (7, "maj"), (9, "min"), (5, "maj")),
    "I-vi-IV-V": ((0, "maj"), (9, "min"), (5, "maj"), (7, "maj")),
    "I-IV-I-V": ((0, "maj"), (5, "maj"), (0, "maj"), (7, "maj")),
}
_MINOR_PROGRESSIONS: dict[str, tuple[tuple[int, str], ...]] = {
    "i-bVI-bVII-i": ((0, "min"), (8, "maj"), (10, "maj"), (0, "min")),
    "i-iv-v-i": ((0, "min"), (5, "min"), (7, "min"), (0, "min")),
    "i-iv-bVI-V": ((0, "min"), (5, "min"), (8, "maj"), (7, "maj")),
    "i-bVII-bVI-V": ((0, "min"), (10, "maj"), (8, "maj"), (7, "maj")),  # descending (Andalusian)
    "i-ii°-V-i": ((0, "min"), (2, "dim"), (7, "maj"), (0, "min")),
}
_DARK_PROGRESSIONS = ("i-bVII-bVI-V", "i-ii°-V-i")  # chosen more often the lower the valence
_CONTOURS = ("up", "down", "arch", "valley", "walk")


@dataclass(frozen=True)
class _Instrument:
    kind: str  # harmonic recipe: saw, square, organ, soft, bell
    attack: float
    decay: float
    sustain: float
    release: float
    tau: float = math.inf  # exponential decay over the whole note (plucked / struck sounds)
    bright_tau: float = 0.0  # > 0: the harmonics die out faster than the fundamental
    extra_rolloff: float = 0.0


_INSTRUMENTS = {
    "pad": _Instrument("saw", 0.15, 0.3, 0.8, 0.35, extra_rolloff=0.5),
    "organ": _Instrument("organ", 0.01, 0.05, 0.9, 0.06),
    "pluck": _Instrument("saw", 0.003, 0.02, 1.0, 0.05, tau=0.45, bright_tau=0.08),
    "epiano": _Instrument("soft", 0.004, 0.1, 0.9, 0.12, tau=0.9, bright_tau=0.15),
    "lead": _Instrument("saw", 0.02, 0.1, 0.85, 0.08),
    "flute": _Instrument("square", 0.05, 0.1, 0.9, 0.1, extra_rolloff=0.8),
    "bell": _Instrument("bell", 0.002, 0.02, 1.0, 0.2, tau=0.7, bright_tau=0.25),
    "bass": _Instrument("saw", 0.005, 0.08, 0.8, 0.06, tau=0.6, extra_rolloff=0.8),
}
CHORD_INSTRUMENTS = ("pad", "organ", "pluck", "epiano")
MELODY_INSTRUMENTS = ("lead", "pluck", "flute", "bell", "epiano")


@dataclass(frozen=True)
class SynthParams:
    """The cues actually used for one song (targets, emotion cues, then nuisance), for inspection and tests."""

    valence: float
    arousal: float
    # arousal cues
    tempo_bpm: float
    loudness_db: float  # gain below the loudest possible clip, dB (<= 0)
    density: float  # melody notes per beat (before quantising to 1/2, 1, 2, 4)
    brightness: float  # -1 (dark) .. 1 (bright); mostly arousal, a bit valence
    rolloff: float  # harmonic amplitude exponent, a_k = k**-rolloff
    tone_cutoff_hz: float  # corner of the final low-pass tone filter
    articulation: float  # sounding fraction of each inter-onset interval (0.25 staccato .. 1.1 legato)
    percussion: float  # 0 (no drums) .. 1 (busy kit)
    drive: float  # soft saturation amount (>= 1), louder/denser for high arousal
    # valence cues
    mode_major_prob: float
    is_major: bool
    dissonance: float  # 0 .. 1: added clusters/tritones, detuning
    detune_cents: float  # chorus detune of the chord instrument (beating)
    register: float  # MIDI pitch the melody centres on; mostly valence, a bit arousal
    progression: str
    # nuisance (independent of the targets)
    key: int  # tonic pitch class, 0 = C
    chord_instrument: str
    melody_instrument: str
    contour: str
    reverb_wet: float
    reverb_s: float
    gain_offset_db: float  # random gain, dB (<= 0)
    beats_per_chord: int
    first_chord: int
    start_offset: float  # where in the first chord the excerpt starts, fraction of a chord


# --- validation and seeding ---------------------------------------------------------------
def _check(seed: int, duration_s: float, sample_rate: int, index: int = 0, n: int = 1) -> None:
    if int(n) < 1:
        raise DataError(f"synth corpus needs n >= 1 clips, got {n}")
    if not duration_s >= MIN_DURATION_S:
        raise DataError(f"synth clips must last at least {MIN_DURATION_S:g} s, got {duration_s}")
    if int(sample_rate) < MIN_SAMPLE_RATE:
        raise DataError(f"synth sample rate must be at least {MIN_SAMPLE_RATE} Hz, got {sample_rate}")
    if int(seed) < 0 or int(index) < 0:
        raise DataError(f"synth seed and song index must be >= 0, got seed {seed}, index {index}")


def _song_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index)])


def _draw_targets(rng: np.random.Generator) -> tuple[float, float]:
    v, a = rng.uniform(-1.0, 1.0, size=2)
    return round(float(v), 4), round(float(a), 4)


def sample_targets(seed: int, index: int) -> tuple[float, float]:
    """The (valence, arousal) target of song ``index`` of corpus ``seed``, each uniform on [-1, 1]."""
    _check(seed, MIN_DURATION_S, MIN_SAMPLE_RATE, index)
    return _draw_targets(_song_rng(seed, index))


# --- the cue model ------------------------------------------------------------------------
def cues_for(valence: float, arousal: float, rng: np.random.Generator) -> SynthParams:
    """Draw the musical cues for a (valence, arousal) target: each cue is f(target) + noise, plus nuisance."""
    v, a = float(valence), float(arousal)
    for name, x in (("valence", v), ("arousal", a)):
        if not -1.0 <= x <= 1.0:
            raise DataError(f"synth {name} must lie in [-1, 1], got {x}")
    z = rng.standard_normal(12)
    tempo = float(np.clip(118.0 + 50.0 * a + 8.0 * v + 10.0 * z[0], 55.0, 190.0))
    loudness_db = float(np.clip(-7.0 + 6.0 * a + 2.0 * z[1], -16.0, 0.0))
    density = float(2.0 ** (1.1 * a + 0.35 * z[2]))
    brightness = float(np.clip(0.75 * a + 0.2 * v + 0.2 * z[3], -1.0, 1.0))
    articulation = float(np.clip(0.8 - 0.35 * a + 0.08 * z[4], 0.25, 1.1))
    percussion = float(np.clip(0.4 + 0.6 * a + 0.15 * z[5], 0.0, 1.0))
    drive = float(np.clip(1.0 + 2.0 * a + 0.4 * z[6], 1.0, 4.0))
    major_prob = float(1.0 / (1.0 + math.exp(-(3.0 * v + 0.6 * z[7]))))
    is_major = bool(rng.random() < major_prob)
    dissonance = float(np.clip(0.42 - 0.38 * v + 0.1 * a + 0.12 * z[8], 0.0, 1.0))
    register = float(65.0 + 5.0 * v + 2.0 * a + 2.0 * z[9])
    if is_major:
        names = list(_MAJOR_PROGRESSIONS)
        weights = np.ones(len(names))
    else:
        names = list(_MINOR_PROGRESSIONS)
        weights = np.array([1.0 + 1.5 * max(0.0, -v) if n in _DARK_PROGRESSIONS else 1.0 for n in names])
    progression = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    beats_per_chord = int(np.clip(round(tempo / 60.0 * 1.5), 2, 4))  # chords change every ~1.2-2.2 s
    return SynthParams(
        valence=v,
        arousal=a,
        tempo_bpm=tempo,
        loudness_db=loudness_db,
        density=density,
        brightness=brightness,
        rolloff=2.3 - 0.9 * brightness,
        tone_cutoff_hz=float(1400.0 * 2.0 ** (1.8 * brightness)),
        articulation=articulation,
        percussion=percussion,
        drive=drive,
        mode_major_prob=major_prob,
        is_major=is_major,
        dissonance=dissonance,
        detune_cents=2.0 + 28.0 * dissonance,
        register=register,
        progression=progression,
        key=int(rng.integers(12)),
        chord_instrument=CHORD_INSTRUMENTS[int(rng.integers(len(CHORD_INSTRUMENTS)))],
        melody_instrument=MELODY_INSTRUMENTS[int(rng.integers(len(MELODY_INSTRUMENTS)))],
        contour=_CONTOURS[int(rng.integers(len(_CONTOURS)))],
        reverb_wet=float(rng.uniform(0.05, 0.35)),
        reverb_s=float(rng.uniform(0.4, 1.8)),
        gain_offset_db=float(rng.uniform(-4.0, 0.0)),
        beats_per_chord=beats_per_chord,
        first_chord=int(rng.integers(4)),
        start_offset=float(rng.random()),
    )


# --- instruments --------------------------------------------------------------------------
def _harmonic_amps(kind: str, rolloff: float, rng: np.random.Generator) -> np.ndarray:
    k = np.arange(1, _MAX_HARMONICS + 1, dtype=np.float64)
    amps = k**-rolloff
    if kind == "square":
        amps[1::2] = 0.0
    elif kind == "organ":
        amps *= np.where(np.isin(k, (1, 2, 3, 4, 6, 8)), 1.0, 0.12) * k**0.6
    elif kind == "soft":
        amps *= k**-1.0
    elif kind == "bell":
        amps *= np.where(np.isin(k, (1, 2, 3, 5, 7, 9)), 1.0, 0.05) * k**0.4
    return amps * np.exp(0.2 * rng.standard_normal(amps.size))  # per-song timbre jitter (nuisance)


@lru_cache(maxsize=1)
def _unit_sine_table() -> np.ndarray:
    t = np.sin(2.0 * np.pi * np.arange(_TABLE + 1) / _TABLE).astype(np.float32)
    t.setflags(write=False)
    return t


def _make_table(amps: np.ndarray) -> np.ndarray:
    spec = np.zeros(_TABLE // 2 + 1, dtype=np.complex128)
    spec[1 : amps.size + 1] = -1j * amps
    wave = np.fft.irfft(spec, _TABLE)
    wave /= max(float(np.max(np.abs(wave))), 1e-12)
    return np.append(wave, wave[0]).astype(np.float32)  # one guard sample for interpolation


class _Synth:
    """Renders notes of the song's instruments into one buffer (band-limited wavetables)."""

    def __init__(self, params: SynthParams, sample_rate: int, rng: np.random.Generator) -> None:
        self.sr = sample_rate
        self.rng = rng
        self.amps = {
            name: _harmonic_amps(inst.kind, params.rolloff + inst.extra_rolloff, rng)
            for name, inst in _INSTRUMENTS.items()
        }
        self._tables: dict[tuple[str, int], np.ndarray] = {}

    def table(self, name: str, freq: float) -> np.ndarray:
        k = int(np.clip(0.45 * self.sr / freq, 1, _MAX_HARMONICS))  # no harmonic above ~0.9 Nyquist
        key = (name, k)
        if key not in self._tables:
            self._tables[key] = _make_table(self.amps[name][:k])
        return self._tables[key]

    def _osc(self, table: np.ndarray, freq: float, n: int) -> np.ndarray:
        # fixed-point phase (table index in units of 2**-_FRAC_BITS): exact wrap-around, integer ops only
        step = round(freq * _TABLE / self.sr * (1 << _FRAC_BITS))
        start = int(self.rng.integers(_TABLE << _FRAC_BITS))
        pos = np.arange(n, dtype=np.int64)
        pos *= step
        pos += start
        pos &= (_TABLE << _FRAC_BITS) - 1
        i0 = pos >> _FRAC_BITS
        frac = (pos & ((1 << _FRAC_BITS) - 1)).astype(np.float32)
        frac *= np.float32(1.0 / (1 << _FRAC_BITS))
        lo = table[i0]
        hi = table[i0 + 1]
        hi -= lo
        hi *= frac
        hi += lo
        return hi

    def note(
        self, buf: np.ndarray, start_s: float, gate_s: float, midi: float, amp: float, name: str, detune: float = 0.0
    ) -> None:
        inst = _INSTRUMENTS[name]
        s0 = round(start_s * self.sr)
        n = min(round((gate_s + inst.release) * self.sr), buf.size - s0)
        if n <= 0 or s0 < 0:
            return
        freq = 440.0 * 2.0 ** ((midi - 69.0) / 12.0)
        t = np.arange(n, dtype=np.float32) / np.float32(self.sr)
        a, d, s, r = inst.attack, inst.decay, inst.sustain, inst.release
        g = max(gate_s, 1e-3)
        if g <= a:
            xp, fp = [0.0, g, g + r], [0.0, g / a, 0.0]
        elif g <= a + d:
            lvl = 1.0 + (s - 1.0) * (g - a) / d
            xp, fp = [0.0, a, g, g + r], [0.0, 1.0, lvl, 0.0]
        else:
            xp, fp = [0.0, a, a + d, g, g + r], [0.0, 1.0, s, s, 0.0]
        env = np.interp(t, np.asarray(xp, np.float32), np.asarray(fp, np.float32)).astype(np.float32)
        if math.isfinite(inst.tau):
            env *= np.exp(-t / np.float32(inst.tau))
        sig = self._osc(self.table(name, freq), freq, n)
        if detune > 0.0:
            f2 = freq * 2.0 ** (detune / 1200.0)
            sig = 0.5 * (sig + self._osc(self.table(name, f2), f2, n))
        if inst.bright_tau > 0.0:  # harmonics fade faster than the fundamental
            w = np.exp(-t / np.float32(inst.bright_tau))
            sig = sig * w + self._osc(_unit_sine_table(), freq, n) * (1.0 - w)
        buf[s0 : s0 + n] += np.float32(amp) * env * sig


def _drum_kit(sr: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    def t_of(seconds: float) -> np.ndarray:
        return np.arange(round(seconds * sr)) / sr

    t = t_of(0.35)
    f = rng.uniform(40, 55) + rng.uniform(70, 110) * np.exp(-t / 0.035)
    kick = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t / 0.16)
    kick[: round(0.004 * sr)] += 0.3 * rng.standard_normal(round(0.004 * sr))
    t = t_of(0.25)
    noise = rng.standard_normal(t.size)
    noise = np.convolve(noise, np.ones(3) / 3, mode="same")
    snare = 0.7 * noise * np.exp(-t / 0.07) + 0.5 * np.sin(2 * np.pi * rng.uniform(170, 210) * t) * np.exp(-t / 0.05)
    t = t_of(0.08)
    hiss = np.diff(rng.standard_normal(t.size + 2), n=2) / 2.0  # second difference: high-passed noise
    hat = hiss * np.exp(-t / rng.uniform(0.015, 0.03))
    return {k: (v / np.max(np.abs(v))).astype(np.float32) for k, v in (("kick", kick), ("snare", snare), ("hat", hat))}


def _drum_pattern(p: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Velocities for one 4/4 bar of 16 steps, per drum, from the percussion activity ``p``."""
    kick, snare, hat = np.zeros(16), np.zeros(16), np.zeros(16)
    if p >= 0.2:
        hat_steps = 4 if p < 0.45 else 2 if p < 0.75 else 1
        hat[::hat_steps] = 0.25 + 0.6 * p
        hat[::4] *= 1.3
    if p >= 0.3:
        kick[[0, 8]] = 1.0
    if p >= 0.65:
        kick[10] = 0.8
        if rng.random() < 0.5:
            kick[6] = 0.6
    if p >= 0.85:
        kick[[4, 12]] = 0.9
    if p >= 0.4:
        snare[[4, 12]] = 0.6 + 0.4 * p
    if p >= 0.8:
        snare[[7, 14]] = 0.25
    return {"kick": kick, "snare": snare, "hat": hat}


# --- composition and rendering ------------------------------------------------------------
def _place(pitch: float, low: float) -> float:
    """``pitch`` moved by whole octaves into ``[low, low + 12)``."""
    return low + (pitch - low) % 12


def _fft_size(n: int) -> int:
    """Smallest even 2**a * 3**b * 5**c >= n (fast for pocketfft)."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            size = p35 * 2
            while size < n:
                size *= 2
            best = min(best, size)
            p35 *= 3
        p5 *= 5
    return best


def _render(p: SynthParams, duration_s: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    beat = 60.0 / p.tempo_bpm
    chord_s = p.beats_per_chord * beat
    pre_s = 0.5 + p.start_offset * chord_s  # the excerpt starts mid-song: pre-roll gives reverb and notes a past
    total_s = pre_s + duration_s
    n_clip = round(duration_s * sr)
    pre_n = round(pre_s * sr)
    buf_len = pre_n + n_clip
    music = np.zeros(buf_len, np.float32)
    drums = np.zeros(buf_len, np.float32)
    synth = _Synth(p, sr, rng)
    scale = _MAJOR_SCALE if p.is_major else _MINOR_SCALE
    prog = (_MAJOR_PROGRESSIONS if p.is_major else _MINOR_PROGRESSIONS)[p.progression]
    tonic = p.key + 12 * round((p.register - 5 - p.key) / 12)  # melody tonic: degrees 0..7 centre on register
    chord_low = p.register - 17
    subdiv = float(np.clip(2.0 ** round(math.log2(p.density)), 0.5, 4.0))
    subdiv = min(subdiv, 2.0 ** math.floor(math.log2(10.0 * beat)))  # at most ~10 notes a second

    # chords, bass
    n_chords = math.ceil(total_s / chord_s)
    comp_per_chord = 1 if p.density < 0.7 else p.beats_per_chord * (1 if p.density < 1.6 else 2)
    comp_ioi = chord_s / comp_per_chord
    chord_tones: list[np.ndarray] = []
    for c in range(n_chords):
        root, quality = prog[(p.first_chord + c) % len(prog)]
        tones = [_place(p.key + root + iv, chord_low) for iv in _QUALITY[quality]]
        if rng.random() < p.dissonance:  # cluster (minor second) or tritone against the chord
            extra = p.key + root + (1, 6, 8)[int(rng.integers(3))]
            tones.append(_place(extra, chord_low))
        chord_tones.append(np.asarray(tones) % 12)
        amp = 0.32 / math.sqrt(len(tones))
        for h in range(comp_per_chord):
            start = c * chord_s + h * comp_ioi
            gate = comp_ioi * p.articulation
            for m in tones:
                synth.note(music, start, gate, m, amp, p.chord_instrument, detune=p.detune_cents)
        bass_hits = p.beats_per_chord if p.density >= 0.7 else 1
        bass_ioi = chord_s / bass_hits
        bass = _place(p.key + root, p.register - 33)
        for h in range(bass_hits):
            synth.note(music, c * chord_s + h * bass_ioi, bass_ioi * p.articulation, bass, 0.45, "bass")

    # melody: a scale-degree walk shaped by the contour, snapped to chord tones on beats
    ioi = beat / subdiv
    onsets = np.arange(0.0, total_s, ioi)
    n_notes = onsets.size
    play = rng.random(n_notes) < 0.85 - 0.1 * math.log2(subdiv)  # sparse lines rest less
    steps = rng.choice([-2, -1, 0, 1, 2], size=n_notes, p=[0.15, 0.3, 0.1, 0.3, 0.15])
    phase = np.linspace(0.0, 1.0, n_notes)
    drift = {
        "up": 6.0 * phase,
        "down": -6.0 * phase,
        "arch": 6.0 * np.sin(np.pi * phase),
        "valley": -6.0 * np.sin(np.pi * phase),
        "walk": np.zeros(n_notes),
    }[p.contour]
    degrees = np.clip(np.cumsum(steps) * 0.5 + drift + 2, -4, 10).round().astype(int)
    detune_sd = 0.15 * p.dissonance  # mistuning of the melody, semitones
    for t0, deg, on in zip(onsets, degrees, play, strict=True):
        if not on:
            continue
        midi = tonic + 12 * (deg // 7) + scale[deg % 7]
        on_beat = abs(t0 / beat - round(t0 / beat)) < 1e-6
        tones = chord_tones[min(int(t0 / chord_s), n_chords - 1)]
        if on_beat and rng.random() < 0.6:  # move to the nearest chord tone
            cand = midi + np.arange(-3, 4)
            ok = cand[np.isin(cand % 12, tones)]
            if ok.size:
                midi = int(ok[np.argmin(np.abs(ok - midi))])
        elif rng.random() < 0.25 * p.dissonance:  # chromatic neighbour
            midi += 1 if rng.random() < 0.5 else -1
        midi += detune_sd * rng.standard_normal()
        synth.note(music, t0, ioi * p.articulation, midi, 0.5, p.melody_instrument)

    # drums
    kit = _drum_kit(sr, rng)
    pattern = _drum_pattern(p.percussion, rng)
    step_s = beat / 4
    steps_total = math.ceil(total_s / step_s)
    for name, vel in pattern.items():
        sample = kit[name]
        level = {"kick": 0.7, "snare": 0.6, "hat": 0.45}[name]
        for s in np.nonzero(np.resize(vel, steps_total))[0]:
            s0 = round(s * step_s * sr)
            if s0 >= buf_len:
                continue
            n = min(sample.size, buf_len - s0)
            v = vel[s % 16] * level * float(np.exp(0.15 * rng.standard_normal()))
            drums[s0 : s0 + n] += np.float32(v) * sample[:n]
    mix = music + drums

    # tone filter + reverb in one FFT pass: y = x * (delta + wet * IR), low-passed
    ir_n = round(p.reverb_s * sr)
    t_ir = np.arange(ir_n) / sr
    ir = rng.standard_normal(ir_n) * np.exp(-6.9 * t_ir / p.reverb_s)
    ir[: round(0.01 * sr)] = 0.0  # 10 ms pre-delay
    ir /= np.sqrt(np.sum(ir**2))
    nfft = _fft_size(buf_len + ir_n)
    freqs = np.fft.rfftfreq(nfft, 1.0 / sr)
    tone = 1.0 / np.sqrt(1.0 + (freqs / p.tone_cutoff_hz) ** 4)
    spec = np.fft.rfft(mix, nfft) * tone * (1.0 + p.reverb_wet * np.fft.rfft(ir, nfft))
    out = np.fft.irfft(spec, nfft)[pre_n : pre_n + n_clip]

    # soft saturation (denser, louder), fades, then peak-normalise with the loudness cue kept as gain
    peak = float(np.max(np.abs(out)))
    if peak <= 0.0:
        raise DataError("synth produced silence (this is a bug)")
    out = np.tanh(p.drive * out / peak) / math.tanh(p.drive)
    fade = round(0.01 * sr)
    ramp = np.linspace(0.0, 1.0, fade)
    out[:fade] *= ramp
    out[-fade:] *= ramp[::-1]
    out /= float(np.max(np.abs(out)))
    gain_db = PEAK_DBFS + p.loudness_db + p.gain_offset_db
    return (out * 10.0 ** (gain_db / 20.0)).astype(np.float32)


def render_song(
    seed: int, index: int, duration_s: float = 12.0, sample_rate: int = 16000
) -> tuple[np.ndarray, float, float, SynthParams]:
    """Synthesise song ``index`` of corpus ``seed``: ``(audio float32 mono, valence, arousal, params)``.

    Bit-identical on every call; independent of how many songs the corpus holds. The
    peak is at most -1 dBFS; quieter (low-arousal) songs stay quieter.
    """
    _check(seed, duration_s, sample_rate, index)
    rng = _song_rng(seed, index)
    valence, arousal = _draw_targets(rng)
    params = cues_for(valence, arousal, rng)
    audio = _render(params, float(duration_s), int(sample_rate), rng)
    return audio, valence, arousal, params


# --- corpora on disk ----------------------------------------------------------------------
def _clip_name(seed: int, index: int) -> str:
    return f"synth_{seed}_{index:05d}"


def _corpus_meta(n: int, seed: int, duration_s: float, sample_rate: int) -> dict:
    return {
        "n": int(n),
        "seed": int(seed),
        "duration_s": float(duration_s),
        "sample_rate": int(sample_rate),
        "version": SYNTH_VERSION,
    }


def _same_clips(meta: dict | None, want: dict) -> bool:
    """Whether clips written under ``meta`` equal those of ``want`` (n may differ: songs are independent of n)."""
    return meta is not None and all(meta.get(k) == want[k] for k in ("seed", "duration_s", "sample_rate", "version"))


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_clip(job: tuple[str, int, int, float, int]) -> int:
    path, seed, index, duration_s, sample_rate = job
    audio, _, _, _ = render_song(seed, index, duration_s, sample_rate)
    final = Path(path)
    tmp = final.with_name(f".{final.stem}.{os.getpid()}.tmp.wav")
    write_wav(tmp, audio, sample_rate)
    tmp.replace(final)
    return index


def _clip_ok(path: Path, duration_s: float, sample_rate: int) -> bool:
    try:
        sr, dur, channels = audio_info(path)
    except Exception:
        return False
    return sr == sample_rate and channels == 1 and round(dur * sr) == round(duration_s * sample_rate)


class _Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.bar = total, 0, None
        self.enabled = enabled
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc="synth", unit="clip", file=sys.stderr)
            except ImportError:
                self.bar = None

    def step(self, k: int = 1) -> None:
        self.done += k
        if self.bar is not None:
            self.bar.update(k)
        elif self.enabled:
            print(f"\rsynth {self.done}/{self.total} clips", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            print(file=sys.stderr)


def write_corpus(
    out_dir: str | Path,
    n: int = 400,
    seed: int = 0,
    duration_s: float = 12.0,
    sample_rate: int = 16000,
    progress: bool = False,
    workers: int | None = None,
) -> Path:
    """Write ``n`` clips to ``out_dir/clips/`` plus ``manifest.csv`` and ``corpus.json``; returns the manifest path.

    Each clip is written to a temporary file and renamed, so a clip that exists is whole.
    Clips already present from a corpus with the same seed, duration, sample rate and
    synth version are kept (an interrupted run resumes); ``corpus.json`` is written last,
    so its presence marks a complete corpus. Clips of other indices already in the folder
    are left alone (they are not in the manifest). ``workers > 1`` renders in parallel
    processes (default ``min(2, cpu_count)``).
    """
    _check(seed, duration_s, sample_rate, n=n)
    n, seed, sample_rate, duration_s = int(n), int(seed), int(sample_rate), float(duration_s)
    out_dir = Path(out_dir)
    clips = out_dir / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    want = _corpus_meta(n, seed, duration_s, sample_rate)
    done_json, partial_json = out_dir / "corpus.json", out_dir / "corpus.partial.json"
    reuse = _same_clips(_read_json(done_json), want) or _same_clips(_read_json(partial_json), want)
    done_json.unlink(missing_ok=True)
    partial_json.write_text(json.dumps(want, indent=2) + "\n", encoding="utf-8")

    paths = [clips / f"{_clip_name(seed, i)}.wav" for i in range(n)]
    todo = [i for i in range(n) if not (reuse and paths[i].is_file() and _clip_ok(paths[i], duration_s, sample_rate))]
    jobs = [(str(paths[i]), seed, i, duration_s, sample_rate) for i in todo]
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    bar = _Progress(n, progress)
    bar.step(n - len(todo))
    try:
        if workers > 1 and len(jobs) >= 2 * workers:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                for _ in pool.map(_write_clip, jobs, chunksize=max(1, min(8, len(jobs) // (4 * workers)))):
                    bar.step()
        else:
            for job in jobs:
                _write_clip(job)
                bar.step()
    finally:
        bar.close()

    rows = []
    for i, path in enumerate(paths):
        valence, arousal = sample_targets(seed, i)
        song_id = _clip_name(seed, i)
        rows.append({"path": path, "valence": valence, "arousal": arousal, "artist": song_id, "id": song_id})
    manifest = write_manifest(out_dir / "manifest.csv", rows, scale=(-1.0, 1.0))
    tmp = done_json.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(want, indent=2) + "\n", encoding="utf-8")
    tmp.replace(done_json)
    partial_json.unlink(missing_ok=True)
    return manifest


def _cache_root(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("EDGEEMO_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgeemo"


def builtin_corpus(
    n: int = 400,
    seed: int = 0,
    duration_s: float = 12.0,
    sample_rate: int = 16000,
    cache_dir: str | Path | None = None,
) -> SongSet:
    """The built-in synthesised emotion corpus as a :class:`SongSet` named ``builtin``, generated once and cached.

    Lives in ``<cache>/builtin-<hash of the params>`` where ``<cache>`` is ``cache_dir``,
    else ``$EDGEEMO_CACHE``, else ``~/.cache/edgeemo``; reused when its ``corpus.json``
    matches and every clip is present, (re)written otherwise.
    """
    _check(seed, duration_s, sample_rate, n=n)
    want = _corpus_meta(n, seed, duration_s, sample_rate)
    digest = hashlib.sha256(json.dumps(want, sort_keys=True).encode()).hexdigest()[:12]
    folder = _cache_root(cache_dir) / f"builtin-{digest}"
    manifest = folder / "manifest.csv"
    complete = (
        _read_json(folder / "corpus.json") == want
        and manifest.is_file()
        and all((folder / "clips" / f"{_clip_name(seed, i)}.wav").is_file() for i in range(n))
    )
    if not complete:
        print(f"generating the built-in corpus ({n} clips x {duration_s:g} s) into {folder}", file=sys.stderr)
        write_corpus(folder, n=n, seed=seed, duration_s=duration_s, sample_rate=sample_rate, progress=True)
    songs = read_manifest(manifest, name="builtin")
    if songs.skipped or len(songs) != n:
        raise DataError(f"built-in corpus in {folder} is incomplete ({len(songs)} of {n} clips); delete the folder")
    songs.description = (
        f"built-in synthesised emotion corpus: {n} clips x {duration_s:g} s, seed {seed}, "
        f"edgeemo synth v{SYNTH_VERSION}"
    )
    return songs
