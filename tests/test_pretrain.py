"""Teacher pretraining on unlabeled audio: file discovery, window choice, examples + cache, training, resume, hand-over.

The teacher signal here is a small deterministic stand-in for musicnn (loudness and
brightness of the 3 s patch around each window), so the tests need no musicnn weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeemo.data.unlabeled import find_unlabeled, holdout_split, window_indices
from edgeemo.errors import DataError
from edgeemo.runtime.audio import write_wav
from tests.train_fixtures import SMALL_FEATURES, interrupted_on_call

SR = 16000
N_SONGS = 16


def tone_file(path: Path, seconds: float, freq: float, amp: float, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    sweep = freq * (1 + 0.5 * np.sin(2 * np.pi * t / 7.0))  # the content changes along the file
    x = amp * np.sin(2 * np.pi * np.cumsum(sweep) / SR) + 0.01 * rng.normal(size=t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, x.astype(np.float32), SR)
    return path


class FakeEmbedder:
    """Loudness and spectral centroid of the 3 s around each centre, spread over 6 dims, plus 3 'tags'."""

    def __init__(self) -> None:
        self.calls = 0
        self.proj = np.random.default_rng(5).normal(size=(2, 6)).astype(np.float32)

    def embed_at(self, signal16k: np.ndarray, centers_s: np.ndarray, batch_size: int = 4) -> dict[str, np.ndarray]:
        self.calls += 1
        feats = []
        for c in centers_s:
            a = max(0, int((c - 1.5) * SR))
            seg = signal16k[a : a + 3 * SR]
            spec = np.abs(np.fft.rfft(seg)) + 1e-9
            centroid = float((spec * np.arange(spec.size)).sum() / spec.sum()) / spec.size
            feats.append([np.log10(np.mean(seg**2) + 1e-9), 10 * centroid])
        f = np.asarray(feats, np.float32)
        emb = np.maximum(f @ self.proj, 0)
        tags = 1 / (1 + np.exp(-np.stack([f[:, 0] + 2, f[:, 1] - 1, f[:, 0] - f[:, 1]], 1)))
        return {"penultimate": emb, "tags": tags.astype(np.float32)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("unlabeled")
    rng = np.random.default_rng(0)
    for i in range(N_SONGS):
        tone_file(root / "a" / f"song{i:02d}.wav", 21.0, rng.uniform(200, 1600), rng.uniform(0.03, 0.4), seed=i)
    tone_file(root / "a" / "sfx.wav", 2.0, 440, 0.3)  # a sound effect: too short
    (root / "b").mkdir()
    (root / "b" / "broken.ogg").write_bytes(b"not an ogg file at all")
    (root / "b" / "notes.txt").write_text("not audio")
    (root / "b" / "link.wav").symlink_to(root / "a" / "song00.wav")  # the same file twice counts once
    return root


def test_find_unlabeled_skips_short_broken_duplicate_and_excluded_files(corpus):
    found = find_unlabeled([corpus], exclude=[corpus / "a" / "song15.wav"])
    assert [p.name for p in found.files] == [f"song{i:02d}.wav" for i in range(15)]  # link.wav is song00 again
    assert found.excluded == 1
    assert any("broken.ogg" in line for line in found.skipped)
    assert any("sfx.wav" in line and "shorter" in line for line in found.skipped)
    assert found.hours() == pytest.approx(15 * 21.0 / 3600, rel=1e-3)


def test_find_unlabeled_reads_opus(tmp_path):
    """Ogg Opus (e.g. Debian's warzone2100-music) is music like any other: found, timed and decodable."""
    import soundfile as sf

    from edgeemo.runtime.audio import load_audio

    t = np.arange(48000 * 21) / 48000
    sf.write(tmp_path / "track.opus", 0.3 * np.sin(2 * np.pi * 440 * t), 48000, format="OGG", subtype="OPUS")
    found = find_unlabeled([tmp_path])
    assert [p.name for p in found.files] == ["track.opus"]
    assert found.hours() == pytest.approx(21.0 / 3600, rel=1e-2)
    assert load_audio(found.files[0], 16000).shape[0] == pytest.approx(16000 * 21, rel=1e-2)


def test_find_unlabeled_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        find_unlabeled([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no usable audio"):
        find_unlabeled([tmp_path / "empty"])


def test_holdout_split_is_seeded_and_disjoint():
    files = [Path(f"/x/{i}.wav") for i in range(20)]
    train, val = holdout_split(files, 0.1, seed=3)
    assert len(val) == 2 and len(train) == 18
    assert not set(train) & set(val) and set(train) | set(val) == set(files)
    assert holdout_split(files, 0.1, seed=3) == (train, val)
    assert holdout_split(files, 0.1, seed=4)[1] != val
    assert holdout_split(files[:1], 0.1, seed=0) == (files[:1], [])


def test_window_indices_spacing_and_cap():
    cfg = SMALL_FEATURES  # windows every 0.5 s
    n_total = cfg.n_frames + 59 * cfg.window_hop_frames  # 60 windows
    idx = window_indices(n_total, cfg, hop_s=3.0, max_windows=100)
    assert idx.tolist() == list(range(0, 60, 6))
    capped = window_indices(n_total, cfg, hop_s=0.5, max_windows=4)
    assert capped.tolist() == [0, 20, 39, 59]
    assert window_indices(cfg.n_frames - 1, cfg, 3.0, 10).size == 0


torch_tests = pytest.mark.train


@pytest.fixture(scope="module")
def torch_mod():
    return pytest.importorskip("torch")


def _cfg(**kw):
    from tests.train_fixtures import tiny_config

    base = dict(pretrain_epochs=4, pretrain_batch_size=8, pretrain_lr=1e-3, pretrain_hop_s=1.0)
    return tiny_config(**{**base, **kw})


def _pretrain(cfg, out, **kw):
    """The pretrain stage of ``cfg`` as the pipeline runs it: its section, context and both networks' specs."""
    from edgeemo.config import StageContext
    from edgeemo.train.models import student_spec
    from edgeemo.train.pretrain import pretrain_from_folders
    from edgeemo.train.teacher import config_teacher_spec

    shape = cfg.features.shape
    return pretrain_from_folders(
        cfg.pretrain,
        StageContext.of(cfg),
        out,
        teacher_spec=config_teacher_spec(cfg.teacher, shape, from_scratch=True),
        student_spec=student_spec(cfg.student.arch, shape),
        **kw,
    )


def _examples(files, cfg, *args, **kw):
    from edgeemo.config import StageContext
    from edgeemo.train.pretrain import build_pretrain_set

    return build_pretrain_set(files, cfg.pretrain, StageContext.of(cfg), *args, **kw)


@torch_tests
def test_examples_are_windows_and_targets_and_are_cached(corpus, tmp_path, torch_mod):
    from edgeemo.features import frame_windows, log_mel
    from edgeemo.runtime.audio import load_audio

    cfg = _cfg()
    files = [corpus / "a" / "song01.wav", corpus / "a" / "song02.wav", corpus / "b" / "broken.ogg"]
    emb = FakeEmbedder()
    data = _examples(files, cfg, emb, "fake", tmp_path, progress=False)
    assert data.n_files == 2 and len(data.failed) == 1 and "broken.ogg" in data.failed[0]
    assert data.dims == (6, 3)
    per_file = window_indices(log_mel(load_audio(files[0], SR), cfg.features).shape[1], cfg.features, 1.0, 60)
    assert len(data) == 2 * per_file.size
    # the first example is the first chosen window of song1, float16-rounded, with the embedder's targets for it
    frames = log_mel(load_audio(files[0], SR), cfg.features)
    expected = frame_windows(frames, cfg.features)[per_file[0]]
    np.testing.assert_allclose(data.x[0].astype(np.float32), expected, atol=2e-3)
    centre = cfg.features.window_center_s(per_file[:1])
    ref = emb.embed_at(load_audio(files[0], SR), centre)
    np.testing.assert_allclose(data.y[0], np.concatenate([ref["penultimate"][0], ref["tags"][0]]), rtol=1e-6)
    calls = emb.calls
    again = _examples(files, cfg, emb, "fake", tmp_path, progress=False)
    assert emb.calls == calls  # every file came from the cache
    np.testing.assert_array_equal(again.y, data.y)
    other = _examples(files[:1], cfg, emb, "other-signal", tmp_path, progress=False)
    assert emb.calls == calls + 1  # another teacher signal is another cache entry
    assert len(other) == per_file.size


@torch_tests
def test_example_cache_keys_on_content(corpus, tmp_path, torch_mod):
    import os
    import shutil

    cfg = _cfg()
    src = corpus / "a" / "song05.wav"
    emb = FakeEmbedder()
    first = _examples([src], cfg, emb, "fake", tmp_path, progress=False)
    copy = tmp_path / "copied" / "song05.wav"  # the dataset copied or re-mounted: new path and mtime, same bytes
    copy.parent.mkdir()
    shutil.copyfile(src, copy)
    os.utime(copy, ns=(10**9, 10**9))
    again = _examples([copy], cfg, emb, "fake", tmp_path, progress=False)
    assert emb.calls == 1
    np.testing.assert_array_equal(again.y, first.y)


@torch_tests
def test_speed_copies_are_the_file_played_faster_or_slower_with_targets_of_what_is_played(corpus, tmp_path, torch_mod):
    from edgeemo.features import frame_windows, log_mel
    from edgeemo.runtime.audio import load_audio, resample
    from edgeemo.train.pretrain import speed_factors

    cfg = _cfg()
    files = [corpus / "a" / "song07.wav", corpus / "a" / "song08.wav"]
    factors = speed_factors(files[0], 3, cfg.seed)
    assert factors == speed_factors(files[0], 3, cfg.seed)  # fixed by content and seed
    assert factors != speed_factors(files[1], 3, cfg.seed) and factors != speed_factors(files[0], 3, cfg.seed + 1)
    semis = 12 * np.log2(factors)
    assert np.all((np.abs(semis) >= 0.5 - 1e-9) & (np.abs(semis) <= 3.0 + 1e-9))

    emb = FakeEmbedder()
    plain = _examples(files, cfg, emb, "fake", tmp_path, progress=False)
    both = _examples(files, cfg, emb, "fake", tmp_path, progress=False, speed_copies=1)
    assert both.n_files == 2 and both.files == plain.files
    # file 0's own windows, then its copy's, then file 1's and its copy's; a copy counts as its file
    n0 = int((plain.file_of == 0).sum())
    np.testing.assert_array_equal(both.x[:n0], plain.x[:n0])
    speed = speed_factors(files[0], 1, cfg.seed)[0]
    played = resample(load_audio(files[0], SR), SR * speed, SR)
    frames = log_mel(played, cfg.features)
    idx = window_indices(frames.shape[1], cfg.features, cfg.pretrain.hop_s, cfg.pretrain.max_windows)
    copy_rows = np.arange(n0, n0 + idx.size)
    assert np.all(both.file_of[copy_rows] == 0) and np.all(both.file_of[n0 + idx.size :] == 1)
    np.testing.assert_allclose(both.x[n0].astype(np.float32), frame_windows(frames, cfg.features)[idx[0]], atol=2e-3)
    ref = emb.embed_at(played, cfg.features.window_center_s(idx[:1]))
    np.testing.assert_allclose(both.y[n0, :6], ref["penultimate"][0], rtol=1e-5)
    assert not np.allclose(both.y[n0], plain.y[0])  # musicnn heard the changed audio, not the original
    calls = emb.calls
    _examples(files, cfg, emb, "fake", tmp_path, progress=False, speed_copies=1)
    assert emb.calls == calls  # copies are cached too


@torch_tests
@pytest.mark.slow
def test_pretraining_learns_resumes_exactly_and_hands_its_backbone_to_the_teacher(
    corpus, tmp_path, torch_mod, monkeypatch
):
    torch = torch_mod
    from edgeemo.train.checkpoint import load_checkpoint
    from edgeemo.train.teacher import build_teacher

    cfg = _cfg(unlabeled=(str(corpus),), pretrain_val_fraction=0.25)
    done = _pretrain(
        cfg, tmp_path / "full", cache_dir=tmp_path / "cache", progress=False, embedder=FakeEmbedder(), embedder_id="f"
    )
    assert done["files"] == {"train": 12, "held_out": 4}
    assert done["excluded"] == 0 and done["skipped"] == 2
    hist = load_checkpoint(tmp_path / "full" / "last.pt")["history"]
    assert len(hist) == 4
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert done["val"]["emb_r2"] == max(h["val_emb_r2"] for h in hist)
    assert done["val"]["emb_r2"] > 0.0  # better than predicting the mean embedding on unseen files

    # interrupted during epoch 3's validation (epochs 1-2 are checkpointed), then resumed: the same weights
    import edgeemo.train.pretrain as pretrain_mod

    kwargs = dict(cache_dir=tmp_path / "cache", progress=False, embedder=FakeEmbedder(), embedder_id="f")
    with interrupted_on_call(monkeypatch, pretrain_mod, "embedding_report"), pytest.raises(KeyboardInterrupt):
        _pretrain(cfg, tmp_path / "resumed", **kwargs)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 2
    _pretrain(cfg, tmp_path / "resumed", **kwargs)
    a = load_checkpoint(tmp_path / "full" / "last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)

    # the teacher starts from the best epoch's backbone and fine-tunes its last blocks only
    best = load_checkpoint(tmp_path / "full" / "best.pt")["state_dict"]
    teacher = build_teacher(_cfg(teacher_trainable_blocks=0).teacher, cfg.features.shape, Path(done["backbone"]))
    torch.testing.assert_close(
        teacher.backbone.blocks[0].attn.qkv.weight, best["teacher.backbone.blocks.0.attn.qkv.weight"]
    )
    assert not teacher.backbone.blocks[0].attn.qkv.weight.requires_grad


@torch_tests
@pytest.mark.slow
def test_labelled_validation_and_test_songs_are_excluded_from_pretraining(corpus, tmp_path, torch_mod):

    cfg = _cfg(unlabeled=(str(corpus),), pretrain_epochs=1)
    exclude = [corpus / "a" / "song03.wav", corpus / "a" / "song04.wav"]
    done = _pretrain(
        cfg,
        tmp_path / "p",
        exclude=exclude,
        cache_dir=tmp_path / "c",
        progress=False,
        embedder=FakeEmbedder(),
        embedder_id="f",
    )
    assert done["excluded"] == 2
    assert done["files"]["train"] + done["files"]["held_out"] == N_SONGS - 2


@torch_tests
@pytest.mark.slow
def test_student_pretraining_learns_the_same_targets_and_the_student_starts_from_it(corpus, tmp_path, torch_mod):
    torch = torch_mod
    from edgeemo.train.checkpoint import load_checkpoint
    from edgeemo.train.models import build_model, load_backbone, student_spec

    cfg = _cfg(unlabeled=(str(corpus),), pretrain_val_fraction=0.25, pretrain_epochs=2, student_pretrain=True)
    done = _pretrain(
        cfg, tmp_path / "p", cache_dir=tmp_path / "cache", progress=False, embedder=FakeEmbedder(), embedder_id="f"
    )
    student = done["student"]
    assert student["arch"] == cfg.student.arch and student["best_epoch"] in (1, 2)
    hist = load_checkpoint(tmp_path / "p" / "student" / "last.pt")["history"]
    assert len(hist) == 2 and student["val"]["emb_r2"] == max(h["val_emb_r2"] for h in hist)
    best = load_checkpoint(tmp_path / "p" / "student" / "best.pt")
    assert best["model_spec"]["role"] == "student"

    model = build_model(student_spec(cfg.student.arch, cfg.features.shape))
    load_backbone(model, Path(student["backbone"]))
    key = next(k for k in best["state_dict"] if k.startswith("teacher.backbone.") and k.endswith("weight"))
    loaded = model.backbone.state_dict()[key.removeprefix("teacher.backbone.")]
    torch.testing.assert_close(loaded, best["state_dict"][key])

    from edgeemo.errors import TrainingError

    with pytest.raises(TrainingError, match="does not fit the mobilevit_xxs student backbone"):
        load_backbone(model, tmp_path / "p" / "backbone.pt")  # the teacher's ViT backbone
    with pytest.raises(TrainingError, match="not found"):
        load_backbone(model, tmp_path / "missing.pt")


@torch_tests
def test_stages_start_from_pretrained_backbones_only_when_the_run_pretrains_them(tmp_path, torch_mod):
    from edgeemo.errors import TrainingError
    from edgeemo.train.pipeline import open_run, pretrained_backbone

    cfg = _cfg(unlabeled=("music",), student_pretrain=True)
    run = open_run(tmp_path / "r", cfg)
    with pytest.raises(TrainingError, match=r"the student starts from .* which the pretrain stage did not write"):
        pretrained_backbone(run, "student")
    path = run.stage_dir("pretrain") / "student" / "backbone.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    assert pretrained_backbone(run, "student") == path
    other = open_run(tmp_path / "s", _cfg(unlabeled=("music",), student_pretrain=False))
    assert pretrained_backbone(other, "student") is None
    assert pretrained_backbone(open_run(tmp_path / "t", _cfg()), "teacher") is None
