"""The live path: sources -> bounded queue -> StreamingPredictor, the view, the CLI, and a real PulseAudio capture."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

pytest.importorskip("onnx")  # building the test bundle

from edgeemo.cli import main
from edgeemo.errors import EdgeemoError
from edgeemo.mood import mood_name, quadrant_code
from edgeemo.runtime import EmotionModel, mic
from edgeemo.runtime.live import LiveSummary, level_dbfs, run_live, va_plane
from tests.runtime_fixtures import SMALL_CFG, mood_clip, write_clip


def _read_record(path: Path) -> np.ndarray:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0]) == ["time_s", "valence", "arousal", "quadrant", "mood"]
    for r in rows:
        v, a = float(r["valence"]), float(r["arousal"])
        assert (r["quadrant"], r["mood"]) == (quadrant_code(v, a), mood_name(v, a))
    return np.array([[float(r["time_s"]), float(r["valence"]), float(r["arousal"])] for r in rows])


# --- fake sounddevice --------------------------------------------------------------------
class FakeSoundDevice:
    """Enough of sounddevice for MicSource: devices, and an InputStream that plays ``signal`` into the callback."""

    def __init__(self, signal: np.ndarray | None = None, devices: list[dict] | None = None, pace_s: float = 0.0):
        self.signal = signal
        self.pace_s = pace_s
        self.devices = (
            devices
            if devices is not None
            else [
                {"index": 0, "name": "Fake Mic", "max_input_channels": 2, "default_samplerate": 48000.0, "hostapi": 0},
                {"index": 1, "name": "Speakers", "max_input_channels": 0, "default_samplerate": 48000.0, "hostapi": 0},
                {"index": 2, "name": "USB Mic", "max_input_channels": 1, "default_samplerate": 44100.0, "hostapi": 0},
            ]
        )
        self.default = SimpleNamespace(device=[0, 1])
        self.opened: list[dict] = []
        fake = self

        class InputStream:
            def __init__(self, *, device, channels, samplerate, dtype, blocksize, callback):
                fake.opened.append({"device": device, "channels": channels, "samplerate": samplerate})
                self.channels, self.blocksize, self.callback = channels, blocksize, callback
                self._stop = threading.Event()
                self._thread = threading.Thread(target=self._play, daemon=True)

            def _play(self):
                sig = fake.signal if fake.signal is not None else np.zeros(0, np.float32)
                for s in range(0, len(sig), self.blocksize):
                    if self._stop.is_set():
                        return
                    block = np.repeat(sig[s : s + self.blocksize, None], self.channels, axis=1).astype(np.float32)
                    self.callback(block, len(block), None, None)
                    if fake.pace_s:
                        time.sleep(fake.pace_s)

            def start(self):
                self._thread.start()

            def stop(self):
                self._stop.set()

            def close(self):
                self._thread.join(timeout=5)

        self.InputStream = InputStream

    def query_devices(self):
        return self.devices

    def query_hostapis(self):
        return [{"name": "FakeAPI"}]


@pytest.fixture
def fake_sd(monkeypatch):
    def install(**kw) -> FakeSoundDevice:
        fake = FakeSoundDevice(**kw)
        monkeypatch.setattr(mic, "import_sounddevice", lambda: fake)
        return fake

    return install


# --- the queue consumer --------------------------------------------------------------------
def test_array_source_through_the_queue_equals_predict_file(model, tmp_path):
    x = mood_clip(7.0, 22050, seed=11, channels=2)
    path = write_clip(tmp_path / "c.wav", x, 22050)
    want = model.predict_file(path)
    seen = []
    out = io.StringIO()
    summary = run_live(
        model, mic.ArraySource(x, 22050, block_s=0.023), out=out, tty=False, on_window=lambda *w: seen.append(w)
    )
    got = np.array(seen)
    assert summary.windows == len(want) == len(got) and summary.dropped == 0
    np.testing.assert_allclose(got[:, 0], want.times)
    np.testing.assert_allclose(got[:, 1], want.valence, atol=1e-5)
    np.testing.assert_allclose(got[:, 2], want.arousal, atol=1e-5)
    assert summary.mean_valence == pytest.approx(want.summary["valence"], abs=1e-5)
    text = out.getvalue()
    assert text.count("s  valence ") == len(want) and "summary:" in text and "time share" in text


def test_file_source_not_realtime_equals_predict_file(model, tmp_path):
    path = write_clip(tmp_path / "c.wav", mood_clip(5.0, 44100, seed=12), 44100)
    want = model.predict_file(path)
    record = tmp_path / "r.csv"
    summary = run_live(model, mic.FileSource(path, realtime=False), record=record, out=io.StringIO(), tty=False)
    rec = _read_record(record)
    assert summary.windows == len(want) == len(rec)
    np.testing.assert_allclose(rec[:, 1], want.valence, atol=1e-5)


def test_mic_source_via_fake_device_callback(model, fake_sd):
    sig = mood_clip(6.0, 44100, seed=13)
    fake = fake_sd(signal=sig)
    source = mic.MicSource("USB", max_queue=10_000)
    assert source.sample_rate == 44100 and "USB Mic" in source.name  # the device's native rate
    seen = []
    summary = run_live(model, source, duration=6.0, out=io.StringIO(), tty=False, on_window=lambda *w: seen.append(w))
    assert fake.opened == [{"device": 2, "channels": 1, "samplerate": 44100}]
    want = model.predict_signal(sig, 44100)
    got = np.array(seen)
    assert summary.seconds == pytest.approx(6.0) and len(got) == len(want)
    np.testing.assert_allclose(got[:, 1], want.valence, atol=1e-5)


def test_full_queue_counts_dropped_blocks(model, fake_sd):
    fake_sd(signal=mood_clip(3.0, 48000, seed=14))
    source = mic.MicSource(0, max_queue=3)
    source.start()
    time.sleep(0.5)  # the fake device delivers ~60 blocks at once; the queue holds 3
    assert source.dropped > 0
    source.stop()
    summary = run_live(model, mic.ArraySource(np.zeros(100), 16000), out=io.StringIO(), tty=False)
    assert summary.dropped == 0 and summary.windows == 1  # too short: one padded window


def test_duration_stops_and_flush_pads_short_streams(model):
    out = io.StringIO()
    summary = run_live(model, mic.ArraySource(mood_clip(10.0, 16000), 16000), duration=1.0, out=out, tty=False)
    assert summary.seconds == pytest.approx(1.0) and summary.windows == 1
    assert "(padded)" in out.getvalue()


def test_tty_view_redraws_a_panel(model):
    out = io.StringIO()
    run_live(model, mic.ArraySource(mood_clip(3.0, 16000), 16000), out=out, tty=True)
    text = out.getvalue()
    assert "\x1b[" in text and "mood:" in text and "dBFS" in text and "arousal +" in text and "@" in text
    assert "summary:" in text and text.endswith("\n")
    assert "\x1b[?25h" in text  # cursor restored


def test_ctrl_c_prints_a_summary(model):
    def interrupt(*_):
        raise KeyboardInterrupt

    out = io.StringIO()
    source = mic.ArraySource(mood_clip(8.0, 16000), 16000)
    summary = run_live(model, source, out=out, tty=False, on_window=interrupt)
    assert summary.interrupted and summary.windows == 1 and "summary:" in out.getvalue()
    assert source._stop.is_set()


def test_view_helpers():
    plane = va_plane(0.9, -0.9, [(0.0, 0.0)])
    assert any("@" in line for line in plane) and any("calm" in line for line in plane)
    assert level_dbfs(np.full(100, 0.5)) == pytest.approx(-6.02, abs=0.01) and level_dbfs(np.zeros(10)) == -120
    s = LiveSummary(seconds=2.0, windows=4, valence=[0.5, 0.5, -0.5, -0.5], arousal=[0.5, -0.5, -0.5, -0.5])
    assert s.quadrant_share() == {"Q1": 0.25, "Q2": 0.0, "Q3": 0.5, "Q4": 0.25}
    assert "Q3 sad 50%" in s.text() and "(Q4 calm)" in s.text()  # mean (0, -0.25): exactly 0 counts as positive


# --- device selection and errors ---------------------------------------------------------------
def test_resolve_device(fake_sd):
    fake_sd()
    assert mic.resolve_device(None)["index"] == 0
    assert mic.resolve_device("2")["name"] == "USB Mic"
    assert mic.resolve_device("usb")["index"] == 2
    assert mic.resolve_device("Fake Mic")["index"] == 0
    with pytest.raises(EdgeemoError, match=r"no input device matches 'xyz'; available input devices: 0 'Fake Mic'"):
        mic.resolve_device("xyz")
    with pytest.raises(EdgeemoError, match="matches several"):
        mic.resolve_device("mic")
    with pytest.raises(EdgeemoError, match="no input device with index 1"):  # an output-only device
        mic.resolve_device(1)


def test_cli_live_device_errors_are_one_line(bundle, fake_sd, monkeypatch):
    runner = CliRunner()
    fake_sd(devices=[])
    res = runner.invoke(main, ["live", "--bundle", str(bundle), "--duration", "1"])
    assert (
        res.exit_code == 2
        and res.output == "error: no audio input devices found (is a sound card or sound server available?)\n"
    )
    fake_sd()
    res = runner.invoke(main, ["live", "--bundle", str(bundle), "--device", "nothing", "--duration", "1"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "available input devices: 0 'Fake Mic'" in res.output
    res = runner.invoke(main, ["live", "--list-devices"])
    assert res.exit_code == 0 and "USB Mic" in res.output and "Speakers" not in res.output

    def no_portaudio():
        raise EdgeemoError("PortAudio is not installed (PortAudio library not found)")

    monkeypatch.setattr(mic, "import_sounddevice", no_portaudio)
    res = runner.invoke(main, ["live", "--bundle", str(bundle)])
    assert (
        res.exit_code == 2
        and res.output.startswith("error: PortAudio is not installed")
        and res.output.count("\n") == 1
    )


def test_import_sounddevice_messages(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(EdgeemoError, match=r"pip install 'edgeemo\[live\]'"):
        mic.import_sounddevice()
    (tmp_path / "sounddevice.py").write_text("raise OSError('PortAudio library not found')\n")
    monkeypatch.delitem(sys.modules, "sounddevice")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(EdgeemoError, match=r"PortAudio is not installed .*libportaudio2"):
        mic.import_sounddevice()


def test_cli_live_with_fake_mic_records_csv(bundle, fake_sd, tmp_path):
    sig = mood_clip(4.0, 44100, seed=15)
    fake_sd(signal=sig, pace_s=0.002)
    record = tmp_path / "r.csv"
    res = CliRunner().invoke(
        main, ["live", "--bundle", str(bundle), "--device", "2", "--duration", "4", "--record", str(record)]
    )
    assert res.exit_code == 0, res.output
    want = EmotionModel.load(bundle).predict_signal(sig, 44100)
    rec = _read_record(record)
    assert len(rec) == len(want)
    np.testing.assert_allclose(rec[:, 2], want.arousal, atol=1e-5)


@pytest.mark.slow
def test_cli_live_from_file_in_real_time(bundle, tmp_path):
    x = mood_clip(6.0, 44100, seed=16, channels=2)
    path = write_clip(tmp_path / "song.wav", x, 44100)
    record = tmp_path / "live.csv"
    t0 = time.monotonic()
    res = CliRunner().invoke(
        main, ["live", "--bundle", str(bundle), "--from-file", str(path), "--duration", "3", "--record", str(record)]
    )
    elapsed = time.monotonic() - t0
    assert res.exit_code == 0, res.output
    assert elapsed >= 2.5  # paced by the wall clock
    rec = _read_record(record)
    want = EmotionModel.load(bundle).predict_file(path)
    # the windows that end within the first 3 s: the same windows as predict_file's first ones
    n_expected = SMALL_CFG.n_windows((3 * 16000 - SMALL_CFG.n_fft) // SMALL_CFG.hop_length + 1)
    assert len(rec) == n_expected >= 2
    np.testing.assert_allclose(rec[:, 0], want.times[: len(rec)], atol=1e-3)
    np.testing.assert_allclose(rec[:, 1], want.valence[: len(rec)], atol=1e-4)
    np.testing.assert_allclose(rec[:, 2], want.arousal[: len(rec)], atol=1e-4)
    assert "summary: 3.0 s of audio" in res.output
    res = CliRunner().invoke(main, ["live", "--from-file", str(path), "--device", "1", "--bundle", str(bundle)])
    assert res.exit_code == 2 and "--from-file" in res.output


def test_cli_live_from_bad_file(bundle, tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    res = CliRunner().invoke(main, ["live", "--bundle", str(bundle), "--from-file", str(tmp_path / "bad.wav")])
    assert res.exit_code == 2 and res.output.startswith("error: ") and res.output.count("\n") == 1


# --- a real audio server -------------------------------------------------------------------------
def _portaudio_available() -> bool:
    probe = "import sounddevice"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


@pytest.fixture
def pulse_server(tmp_path):
    """A private PulseAudio daemon with a unique null sink; yields the client environment, kills it after."""
    missing = [b for b in ("pulseaudio", "paplay", "pactl") if shutil.which(b) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install pulseaudio pulseaudio-utils)")
    if not _portaudio_available():
        pytest.skip("needs PortAudio (apt-get install libportaudio2) and sounddevice")
    runtime = tmp_path / "pulse"
    runtime.mkdir()
    socket = runtime / "native"
    sink = f"edgeemo_test_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "HOME": str(runtime), "PULSE_RUNTIME_PATH": str(runtime), "XDG_RUNTIME_DIR": str(runtime)}
    env.pop("PULSE_SERVER", None)
    log = open(runtime / "daemon.log", "w")  # noqa: SIM115 - closed below
    daemon = subprocess.Popen(
        [
            "pulseaudio",
            "-n",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--use-pid-file=no",
            f"--load=module-null-sink sink_name={sink}",
            f"--load=module-native-protocol-unix socket={socket} auth-anonymous=1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    client = {**env, "PULSE_SERVER": f"unix:{socket}", "PULSE_SINK": sink, "PULSE_SOURCE": f"{sink}.monitor"}
    try:
        deadline = time.monotonic() + 15
        while subprocess.run(["pactl", "info"], env=client, capture_output=True).returncode != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                log.flush()
                tail = (runtime / "daemon.log").read_text()[-300:].replace("\n", " | ")
                pytest.skip(f"PulseAudio daemon did not start: {tail}")
            time.sleep(0.1)
        yield SimpleNamespace(env=client, sink=sink)
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()


def _align_capture(model: EmotionModel, clip: np.ndarray, sr: int, rec: np.ndarray):
    """Align a captured window series to the clip; returns (reference, captured, lost_s) for the
    windows lying wholly inside the clip.

    The capture starts at an unknown point of the clip (``lost_s`` > 0: its first
    ``lost_s`` seconds were not captured; < 0: silence before it). Coarse: every offset on
    the model's frame grid (31.25 ms), using one window per frame of ``[silence, clip,
    silence]``. Fine: 2 ms steps within +-16 ms of that, predicting the shifted clip.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    from edgeemo.features import log_mel
    from edgeemo.runtime.audio import resample

    cfg = model.feature_config
    pad = 3.0
    sig = np.r_[np.zeros(round(pad * sr), np.float32), clip, np.zeros(round(pad * sr), np.float32)]
    frames = log_mel(resample(sig, sr, cfg.sample_rate), cfg)
    windows = sliding_window_view(frames, cfg.n_frames, axis=1).transpose(1, 0, 2)
    every = model.predict_windows(np.ascontiguousarray(windows[:, None]))  # a window at every frame
    hop_s, step = cfg.hop_length / cfg.sample_rate, cfg.window_hop_frames

    def score(ref: np.ndarray, lost_s: float):
        start = cfg.window_start_s(np.arange(len(ref))) + lost_s  # window starts in clip time
        inside = (start >= 0) & (start + cfg.window_seconds <= len(clip) / sr)
        if inside.sum() < 5:
            return None
        return float(np.median(np.abs(ref[inside] - rec[inside, 1:]))), ref[inside], rec[inside, 1:], lost_s

    coarse = [score(every[o::step][: len(rec)], o * hop_s - pad) for o in range(len(every) - step * (len(rec) - 1))]
    best = min((c for c in coarse if c is not None), key=lambda c: c[0])
    fine = []
    for lost_ms in np.arange(-16.0, 16.5, 2.0) + best[3] * 1000:
        k = round(lost_ms / 1000 * sr)
        shifted = clip[k:] if k >= 0 else np.r_[np.zeros(-k, np.float32), clip]
        p = model.predict_signal(np.r_[shifted, np.zeros(3 * sr, np.float32)], sr)
        fine.append(score(np.c_[p.valence, p.arousal][: len(rec)], k / sr))
    best = min((c for c in [best, *fine] if c is not None), key=lambda c: c[0])
    return best[1], best[2], best[3]


@pytest.mark.slow
def test_live_capture_through_pulseaudio(pulse_server, bundle, tmp_path):
    sr = 44100
    clip = mood_clip(6.0, sr, seed=17)
    path = write_clip(tmp_path / "clip.wav", clip, sr, subtype="PCM_16")
    clip, _ = sf.read(path, dtype="float32")  # what paplay actually plays (16-bit)
    record = tmp_path / "capture.csv"
    env = pulse_server.env
    devices = subprocess.run(
        [sys.executable, "-m", "edgeemo", "live", "--list-devices"], env=env, capture_output=True, text=True
    )
    if "pulse" not in devices.stdout:
        pytest.skip("ALSA has no 'pulse' device (apt-get install libasound2-plugins)")
    cmd = [sys.executable, "-m", "edgeemo", "live", "--bundle", str(bundle), "--device", "pulse"]
    live = subprocess.Popen(
        [*cmd, "--duration", "7.5", "--record", str(record)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30  # wait until the capture stream is connected, then play
        while not subprocess.run(["pactl", "list", "short", "source-outputs"], env=env, capture_output=True).stdout:
            assert live.poll() is None, live.stdout.read()
            assert time.monotonic() < deadline, "edgeemo live never opened the capture stream"
            time.sleep(0.05)
        subprocess.run(["paplay", f"--device={pulse_server.sink}", str(path)], env=env, check=True, timeout=30)
        out, _ = live.communicate(timeout=30)
    finally:
        if live.poll() is None:
            live.kill()
            live.wait()
    assert live.returncode == 0, out
    assert "dropped blocks 0" in out, out
    rec = _read_record(record)
    model = EmotionModel.load(bundle)
    ref, got, offset = _align_capture(model, clip, sr, rec)
    err = np.abs(ref - got)
    # Tolerance. Once aligned to the sample, the PulseAudio path here (16-bit null sink at the clip's rate,
    # unity volume) is bit-transparent: the captured series equals predict() of the clip to 1e-6. The
    # search is in 2 ms steps, and 1 ms of misalignment moves a window by <= 0.003 (measured); 0.02 max
    # (0.005 median, 0.005 on the mean) leaves room for a server that resamples (e.g. running at 48 kHz),
    # while a wrong capture (wrong device, silence, a dropout, misaligned by a frame or more) is off by > 0.03.
    assert len(ref) >= 6 and -1.0 < offset < 3.0
    assert np.median(err) <= 0.005 and err.max() <= 0.02, (offset, err.max(), np.median(err))
    np.testing.assert_allclose(got.mean(axis=0), ref.mean(axis=0), atol=0.005)


class _PairLike:
    """Like sounddevice's ``default.device``: an (input, output) pair object that is not a tuple."""

    def __init__(self, pair):
        self._pair = pair

    def __getitem__(self, i):
        return self._pair[i]


@pytest.mark.parametrize(
    ("default", "starred"), [(_PairLike([2, 1]), 2), ([0, 1], 0), (2, 2), ("USB Mic", 2), (_PairLike([-1, -1]), None)]
)
def test_list_devices_stars_the_default_input(fake_sd, default, starred):
    fake = fake_sd()
    fake.default = SimpleNamespace(device=default)
    fake.query_devices = lambda device=None, kind=None: (
        fake.devices if device is None else next(d for d in fake.devices if d["name"] == device)
    )
    text = mic.devices_table(mic.input_devices())
    stars = [line for line in text.splitlines() if line.startswith("*")]
    if starred is None:
        assert not stars and text.endswith("(no default input device)")
    else:
        assert len(stars) == 1 and stars[0].split()[1] == str(starred) and text.endswith("(* = default input)")
        assert mic.resolve_device(None)["index"] == starred
