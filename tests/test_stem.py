"""The ViT teacher's conv stem: token grid, spec round trip, loading edgeemo's own weights, freezing."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from edgeemo.config import RunConfig  # noqa: E402
from edgeemo.errors import EdgeemoError, TrainingError  # noqa: E402
from edgeemo.train.models import build_model, freeze_for_finetuning, rebuild_spec  # noqa: E402
from edgeemo.train.stem import ConvStem  # noqa: E402
from edgeemo.train.teacher import config_teacher_spec  # noqa: E402
from tests.train_fixtures import teacher_of, tiny_config  # noqa: E402


@pytest.mark.parametrize("patch", [(8, 32), (16, 16), (4, 64)])
def test_conv_stem_lands_on_the_patch_grid(patch):
    stem = ConvStem(1, 40, patch)
    out = stem(torch.randn(2, 1, 64, 128))
    assert out.shape == (2, 40, 64 // patch[0], 128 // patch[1])
    strides = [m.stride for m in stem.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(strides) == max(patch).bit_length() - 1  # one 3x3 conv per halving of the longer side
    assert torch.Size([2 ** sum(s[0] == 2 for s in strides), 2 ** sum(s[1] == 2 for s in strides)]) == patch


def test_conv_stem_needs_power_of_two_patch_sides():
    with pytest.raises(TrainingError, match="power-of-two"):
        ConvStem(1, 8, (8, 24))


def test_the_tiny_preset_teacher_has_the_conv_stem():
    assert isinstance(teacher_of(tiny_config()).backbone.patch_embed.proj, ConvStem)


def test_conv_stem_teacher_survives_config_and_checkpoint_round_trips():
    own = tiny_config(teacher_stem="conv", teacher_patch=(8, 16))
    cfg = RunConfig.from_dict(json.loads(json.dumps(own.to_dict())), strict=True)
    assert cfg == own and cfg.teacher.stem == "conv"
    model = teacher_of(cfg).eval()
    assert isinstance(model.backbone.patch_embed.proj, ConvStem)
    assert tuple(model.backbone.patch_embed.grid_size) == (32 // 8, 64 // 16)
    again = build_model(json.loads(json.dumps(rebuild_spec(model.spec)))).eval()
    again.load_state_dict(model.state_dict())  # strict: the rebuilt model has the same stem
    x = torch.randn(3, 1, 32, 64)
    torch.testing.assert_close(again(x), model(x))
    plain = teacher_of(tiny_config(teacher_patch=(8, 16), teacher_stem="patch"))
    assert "stem" not in plain.spec and isinstance(plain.backbone.patch_embed.proj, torch.nn.Conv2d)
    with pytest.raises(EdgeemoError, match=r"teacher\.stem must be one of patch, conv"):
        tiny_config(teacher_stem="resnet")


def test_conv_stem_backbone_saved_by_edgeemo_loads_as_teacher_weights_and_stays_frozen(tmp_path):
    source = teacher_of(tiny_config(teacher_stem="conv"))
    with torch.no_grad():
        for p in source.backbone.parameters():
            p.add_(0.01)
    path = tmp_path / "backbone.pt"
    torch.save(source.backbone.state_dict(), path)
    cfg = tiny_config(teacher_stem="conv", teacher_weights=str(path))
    teacher = teacher_of(cfg)  # pretrained: frozen for partial fine-tuning
    for key, value in source.backbone.state_dict().items():
        torch.testing.assert_close(teacher.backbone.state_dict()[key], value)
    assert not any(p.requires_grad for p in teacher.backbone.patch_embed.parameters())  # loaded: stays frozen
    assert config_teacher_spec(cfg.teacher, cfg.features.shape, from_scratch=True)["weights"] is None
    bad = tmp_path / "other.pt"
    torch.save({k: v for k, v in source.backbone.state_dict().items() if "blocks.0." not in k}, bad)
    with pytest.raises(TrainingError, match="could not load"):
        teacher_of(tiny_config(teacher_stem="conv", teacher_weights=str(bad)))


def test_plain_vit_weights_load_under_a_fresh_trainable_conv_stem(tmp_path):
    # e.g. an ImageNet ViT file given to --teacher-weights: blocks load, the new stem trains from scratch
    plain = teacher_of(tiny_config(teacher_stem="patch", teacher_depth=2))
    path = tmp_path / "vit.pth"
    torch.save(plain.backbone.state_dict(), path)
    cfg = tiny_config(teacher_stem="conv", teacher_depth=2, teacher_weights=str(path), teacher_trainable_blocks=1)
    model = teacher_of(cfg)
    torch.testing.assert_close(model.backbone.blocks[0].attn.qkv.weight, plain.backbone.blocks[0].attn.qkv.weight)
    assert isinstance(model.backbone.patch_embed.proj, ConvStem)
    assert all(p.requires_grad for p in model.backbone.patch_embed.parameters())
    assert not model.backbone.blocks[0].attn.qkv.weight.requires_grad


def test_a_fresh_conv_stem_trains_when_the_rest_is_frozen():
    model = teacher_of(tiny_config(teacher_stem="conv", teacher_depth=2))
    freeze_for_finetuning(model, 1)  # e.g. hub weights: the stem replaced the pretrained patch embedding
    assert all(p.requires_grad for p in model.backbone.patch_embed.parameters())
    assert not any(p.requires_grad for p in model.backbone.blocks[0].parameters())
