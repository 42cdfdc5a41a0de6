"""The emotion probe of pretraining: its ridge fit against a reference, its loss and R², errors, its use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeemo.errors import DataError
from tests.test_pretrain import FakeEmbedder, corpus  # noqa: F401  (corpus is a fixture)

torch = pytest.importorskip("torch")

from edgeemo.train.probe import MIN_PROBE_SONGS, EmotionProbe, fit_probe, window_labels  # noqa: E402

pytestmark = pytest.mark.train


def _windows(n_songs: int = 30, per_song: int = 6, dims: int = 12, noise: float = 0.3, seed: int = 0):
    """Standardised 'embeddings' whose dims 0 and 1 carry the song's valence and arousal, plus noise dims."""
    rng = np.random.default_rng(seed)
    labels = rng.choice([-1.0, 1.0], size=(n_songs, 2))
    files = [Path(f"/music/song{i:02d}.mp3") for i in range(n_songs)]
    file_of = np.repeat(np.arange(n_songs), per_song)
    z = rng.normal(size=(file_of.size, dims))
    z[:, :2] = labels[file_of] + noise * rng.normal(size=(file_of.size, 2))
    return z.astype(np.float32), file_of, files, {str(f.resolve()): tuple(labels[i]) for i, f in enumerate(files)}


def test_fit_matches_a_reference_ridge_with_unpenalised_intercept():
    z, file_of, files, labels = _windows()
    probe = fit_probe(z, file_of, files, labels, ridge=5.0)
    # reference: augmented least squares [z 1] with the penalty on the weights only
    y = np.array([labels[str(files[f].resolve())] for f in file_of])
    a = np.hstack([z.astype(np.float64), np.ones((len(z), 1))])
    pen = 5.0 * np.eye(a.shape[1])
    pen[-1, -1] = 0.0
    ref = np.linalg.solve(a.T @ a + pen, a.T @ y)
    np.testing.assert_allclose(probe.weight, ref[:-1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(probe.bias, ref[-1], rtol=1e-4, atol=1e-5)
    assert probe.n_songs == 30 and probe.n_windows == 180
    # the emotion lives in dims 0 and 1, and the probe finds it
    others = np.abs(probe.weight[2:]).max()
    assert probe.weight[0, 0] > 5 * others and probe.weight[1, 1] > 5 * others
    assert min(probe.fit_r2) > 0.8
    np.testing.assert_allclose(probe.scale, (z.astype(np.float64) @ probe.weight).std(0), rtol=1e-4)


def test_only_labelled_files_feed_the_fit_matched_by_resolved_path(tmp_path, monkeypatch):
    z, file_of, files, labels = _windows(n_songs=12)
    # half the songs unlabeled: their windows must not move the fit
    half = {k: v for i, (k, v) in enumerate(labels.items()) if i < 6}
    half_and_more = dict(half)
    rows, y = window_labels(file_of, files, half)
    assert rows.tolist() == list(range(36)) and y.shape == (36, 2)
    z2 = z.copy()
    z2[36:] = 99.0  # garbage in the unlabeled songs' rows
    with pytest.raises(DataError, match="found 6, need 8"):
        fit_probe(z2, file_of, files, half, ridge=1.0)
    for k, v in list(labels.items())[6:8]:
        half_and_more[k] = v
    a = fit_probe(z, file_of, files, half_and_more, ridge=1.0)
    b = fit_probe(np.where(file_of[:, None] >= 8, 99.0, z).astype(np.float32), file_of, files, half_and_more, 1.0)
    np.testing.assert_allclose(a.weight, b.weight, rtol=1e-5)
    # a relative path names the same file as its absolute form
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.wav").write_bytes(b"")
    rows, _ = window_labels(np.array([0, 0]), [Path("x.wav")], {str((tmp_path / "x.wav").resolve()): (1.0, -1.0)})
    assert rows.tolist() == [0, 1]


def test_errors_are_one_line_and_say_what_to_do():
    z, file_of, files, labels = _windows(n_songs=MIN_PROBE_SONGS)
    with pytest.raises(DataError, match="--unlabeled") as err:
        fit_probe(z, file_of, files, {}, ridge=1.0)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="ridge must be positive"):
        fit_probe(z, file_of, files, labels, ridge=0.0)


def test_loss_and_r2_read_the_embedding_through_the_probe():
    w = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], np.float32)
    probe = EmotionProbe(w, np.zeros(2, np.float32), np.array([1.0, 4.0], np.float32), 10, 60, (0.5, 0.5))
    z_true = torch.tensor([[1.0, 1.0, 5.0], [-1.0, 0.0, -5.0]])
    assert probe.loss(z_true, z_true).item() == 0.0
    assert probe.r2(z_true, z_true) == pytest.approx(1.0)
    # moving along a direction the probe ignores costs nothing; along a probed one it does, scaled by spread
    other = z_true + torch.tensor([0.0, 0.0, 3.0])
    assert probe.loss(other, z_true).item() == 0.0
    off = z_true + torch.tensor([0.0, 1.0, 0.0])  # arousal output moves by 2, its spread is 4
    assert probe.loss(off, z_true).item() == pytest.approx(((2 / 4) ** 2) / 2)
    mean_only = torch.zeros_like(z_true) + z_true.mean(0)
    assert probe.r2(mean_only, z_true) == pytest.approx(0.0, abs=1e-6)


def _labelled_corpus(corpus: Path) -> dict[str, tuple[float, float]]:  # noqa: F811
    """Labels for the test corpus's songs: 'valence' = loud, 'arousal' = bright (what FakeEmbedder sees)."""
    from edgeemo.runtime.audio import load_audio

    out = {}
    for f in sorted((corpus / "a").glob("song*.wav")):
        x = load_audio(f, 16000)
        loud = float(np.sign(np.log10(np.mean(x**2)) + 2.0))
        out[str(f.resolve())] = (loud, loud)
    return out


def test_pretraining_with_the_probe_records_it_and_reports_probe_r2(corpus, tmp_path):  # noqa: F811
    from edgeemo.config import StageContext
    from edgeemo.train.checkpoint import load_checkpoint
    from edgeemo.train.pretrain import pretrain_from_folders
    from edgeemo.train.teacher import config_teacher_spec
    from tests.train_fixtures import tiny_config

    cfg = tiny_config(
        unlabeled=(str(corpus),),
        pretrain_epochs=2,
        pretrain_batch_size=8,
        pretrain_lr=1e-3,
        pretrain_hop_s=1.0,
        pretrain_val_fraction=0.25,
        pretrain_probe_weight=1.0,
        pretrain_probe_ridge=1.0,
    )
    labels = _labelled_corpus(corpus)
    kw = dict(cache_dir=tmp_path / "c", progress=False, embedder=FakeEmbedder(), embedder_id="f")
    spec = config_teacher_spec(cfg.teacher, cfg.features.shape, from_scratch=True)
    done = pretrain_from_folders(
        cfg.pretrain, StageContext.of(cfg), tmp_path / "p", teacher_spec=spec, labels=labels, **kw
    )
    info = done["emotion_probe"]
    assert info["weight"] == 1.0 and info["ridge"] == 1.0 and info["songs"] == done["files"]["train"] == 12
    ck = load_checkpoint(tmp_path / "p" / "last.pt")
    assert ck["emotion_probe"]["weight"].shape == (6, 2)
    assert all("val_probe_r2" in h and "train_probe_mse" in h for h in ck["history"])
    # without labelled songs among the files the stage stops with the one-line error, before any training
    with pytest.raises(DataError, match="labelled training songs"):
        pretrain_from_folders(cfg.pretrain, StageContext.of(cfg), tmp_path / "q", teacher_spec=spec, labels={}, **kw)
    assert not (tmp_path / "q" / "last.pt").exists()
