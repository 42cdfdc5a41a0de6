"""Decoders: PyAV-made M4A/Opus/MP4/AIFF decode right, libmpg123's noise is swallowed, every unusable path says why."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgeemo.errors import AudioError
from edgeemo.runtime import decoders
from edgeemo.runtime.audio import audio_info, load_audio
from edgeemo.runtime.decoders import open_audio, quiet_mpg123

av = pytest.importorskip("av")
SR = 22050


def _tone(seconds: float = 3.0, sr: int = SR, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode(path: Path, codec: str, signal: np.ndarray, sr: int, rate: int | None = None, **opts) -> Path:
    """Stereo ``signal`` (left = signal, right = -signal / 2) encoded with PyAV's own encoder."""
    rate = rate or sr
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "stereo"
        for k, v in opts.items():
            setattr(stream, k, v)
        frame = av.AudioFrame.from_ndarray(np.stack([signal, -signal / 2]), format="fltp", layout="stereo")
        frame.sample_rate = sr
        fmt = stream.codec_context.format.name
        resampler = av.AudioResampler(format=fmt, layout="stereo", rate=rate)
        for f in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / sr)[np.argmax(spec)])


@pytest.mark.parametrize(
    ("ext", "codec", "rate", "decoder"),
    [
        ("m4a", "aac", SR, "ffmpeg"),
        ("mp4", "aac", 44100, "ffmpeg"),
        ("opus", "libopus", 48000, "soundfile"),  # libsndfile reads Ogg Opus itself
        ("mka", "mp3", SR, "ffmpeg"),
        ("aiff", "pcm_s16be", SR, "soundfile"),
    ],
)
def test_pyav_encoded_files_decode_to_the_right_signal(tmp_path, ext, codec, rate, decoder):
    x = _tone(3.0, rate)
    path = encode(tmp_path / f"tone.{ext}", codec, x, rate)
    with open_audio(path) as f:
        assert (f.decoder, f.samplerate, f.channels) == (decoder, rate, 2)
    y = load_audio(path, 16000)
    # lossy codecs add a few ms of priming / padding; the mono mix is (x - x/2) / 2 = x / 4
    assert abs(y.size - 3.0 * 16000) < 0.1 * 16000
    assert _peak_hz(y, 16000) == pytest.approx(440.0, abs=6.0)
    core = y[4000:-4000]
    assert float(np.sqrt(np.mean(core**2))) == pytest.approx(0.3 / 4 / np.sqrt(2), rel=0.15)
    sr, duration, channels = audio_info(path)
    assert (sr, channels) == (rate, 2) and duration == pytest.approx(3.0, abs=0.15)  # container metadata


def test_m4a_excerpt_skips_in_the_pyav_reader(tmp_path):
    x = np.r_[_tone(1.0, SR, 300.0), _tone(2.0, SR, 1200.0)]
    path = encode(tmp_path / "two.m4a", "aac", x, SR)
    tail = load_audio(path, 16000, start_s=1.5, end_s=2.5)
    assert tail.size == pytest.approx(16000, abs=2) and _peak_hz(tail, 16000) == pytest.approx(1200.0, abs=10.0)


def test_m4a_without_pyav_names_the_formats_extra(tmp_path, monkeypatch):
    path = encode(tmp_path / "tone.m4a", "aac", _tone(1.0), SR)
    monkeypatch.setattr(decoders, "pyav_available", lambda: False)
    with pytest.raises(
        AudioError, match=r"tone\.m4a: decoding \.m4a files needs FFmpeg: pip install 'edgeemo\[formats\]'"
    ):
        load_audio(path, 16000)
    assert ".m4a" not in decoders.audio_extensions() and ".mp3" in decoders.audio_extensions()


def test_quiet_mpg123_swallows_only_libmpg123_lines(capfd):
    with quiet_mpg123():
        os.write(2, b"[src/libmpg123/layer3.c:INT123_do_layer3():1774] error: part2_3_length (960) too large\n")
        os.write(2, b"Note: Trying to resync...\n")
        os.write(2, b"something else went wrong\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "something else went wrong\nafter\n"


def test_valid_mp3_decodes_without_stderr_noise(tmp_path):
    """A real MP3 that makes libmpg123 complain (from ../shared/data, else a PyAV-made one) decodes in silence."""
    real = sorted(Path(__file__).resolve().parents[2].joinpath("shared/data/4q-dev/audio").glob("*.mp3"))[:12]
    files = [str(p) for p in real] or [str(encode(tmp_path / "t.mp3", "mp3", _tone(2.0), SR))]
    code = (
        "import sys\nfrom edgeemo.runtime.audio import load_audio\n"
        "for f in sys.argv[1:]:\n    assert load_audio(f, 16000).size > 16000\n"
    )
    res = subprocess.run([sys.executable, "-c", code, *files], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stderr == "", res.stderr[-500:]
    if real:  # the same files are noisy when read with soundfile directly: the test can see the noise
        raw = (  # libmpg123 complains when a file is read in blocks, as the runtime reads it
            "import soundfile as sf, sys\nfor f in sys.argv[1:]:\n"
            "    with sf.SoundFile(f) as s:\n        while len(s.read(220500)):\n            pass\n"
        )
        noisy = subprocess.run([sys.executable, "-c", raw, *files], capture_output=True, text=True, timeout=120)
        assert "libmpg123" in noisy.stderr


def _forged_wav(path: Path, rate: int) -> Path:
    sf.write(str(path), np.full(600, 0.1, np.float32), 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[24:28] = struct.pack("<I", rate)
    data[28:32] = struct.pack("<I", (rate * 2) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("rate", [1, 999, 2_000_000_000])
def test_forged_header_rates_are_refused_in_one_line(tmp_path, rate):
    path = _forged_wav(tmp_path / f"r{rate}.wav", rate)
    with pytest.raises(AudioError) as info:
        load_audio(path, 16000)
    msg = str(info.value)
    assert msg == f"{path}: sample rate in the file header {rate} Hz is outside 1000..1000000 Hz"


def test_bad_paths_get_the_right_one_line_message(tmp_path):
    rnd = tmp_path / "random.mp3"
    rnd.write_bytes(np.random.default_rng(0).bytes(5000))
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    (tmp_path / "dangling.wav").symlink_to(tmp_path / "gone.wav")
    (tmp_path / "folder.wav").mkdir()
    (tmp_path / "empty.wav").write_bytes(b"")
    cases = {
        rnd: "not a decodable audio file",
        tmp_path / "loop_a": "symbolic link loop",
        tmp_path / "dangling.wav": "broken symbolic link",
        tmp_path / "missing.wav": "no such file",
        tmp_path / "folder.wav": "is a directory",
        tmp_path / "empty.wav": "empty file",
    }
    for path, message in cases.items():
        with pytest.raises(AudioError) as info:
            load_audio(path, 16000)
        msg = str(info.value)
        assert msg.startswith(f"{path}: {message}") and "\n" not in msg, msg
        assert "does not exist" not in msg
    for bad in (None, 123, b"path.wav"):
        with pytest.raises(AudioError, match="expected a file path"):
            open_audio(bad)


@pytest.mark.skipif(os.geteuid() != 0, reason="drops to another user to make a permission error root cannot see")
def test_permission_denied_is_reported_as_such():
    folder = Path(tempfile.mkdtemp(prefix="edgeemo-perm-"))
    try:
        folder.chmod(0o755)
        path = folder / "secret.wav"
        sf.write(str(path), _tone(1.0), SR)
        path.chmod(0o000)
        code = (  # import as root, then read the file as "nobody"
            "import os, sys\nfrom edgeemo.runtime.audio import load_audio\n"
            "os.setgid(65534)\nos.setuid(65534)\nload_audio(sys.argv[1], 16000)\n"
        )
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        res = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env, timeout=60
        )
        assert res.returncode != 0 and f"AudioError: {path}: permission denied" in res.stderr
    finally:
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()
