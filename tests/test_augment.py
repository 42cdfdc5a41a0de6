"""Teacher batch augmentation: mel-axis shift and SpecAugment masks against references, config errors."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgeemo.errors import TrainingError  # noqa: E402
from edgeemo.train.augment import Augment, augment_batch  # noqa: E402


def _numpy_shift(x: np.ndarray, s: int) -> np.ndarray:
    """Reference: row i of the result is row i - s of x, clamped to the edge rows."""
    n = x.shape[0]
    return np.stack([x[min(max(i - s, 0), n - 1)] for i in range(n)])


def test_shift_moves_each_window_by_its_own_offset_and_repeats_the_edge_row():
    torch.manual_seed(3)
    x = torch.randn(16, 1, 12, 5)
    before = x.clone()
    y = augment_batch(x, Augment(shift=3))
    assert torch.equal(x, before)  # the input is untouched
    offsets = set()
    for b in range(x.shape[0]):
        matches = [s for s in range(-3, 4) if np.array_equal(y[b, 0].numpy(), _numpy_shift(x[b, 0].numpy(), s))]
        assert len(matches) == 1, f"window {b} is not a clamped shift of its input"
        offsets.add(matches[0])
    assert len(offsets) >= 3  # offsets are drawn per window, both ways
    assert any(s < 0 for s in offsets) and any(s > 0 for s in offsets)


def test_masks_set_one_band_and_one_span_to_the_window_mean():
    torch.manual_seed(0)
    x = torch.randn(32, 1, 16, 40)
    y = augment_batch(x, Augment(freq_mask=4, time_mask=10))
    for b in range(x.shape[0]):
        changed = (y[b, 0] != x[b, 0]).numpy()
        mean = x[b].mean().item()
        assert np.allclose(y[b, 0].numpy()[changed], mean, atol=1e-6)
        rows = np.flatnonzero(changed.all(axis=1))  # fully masked mel rows (the frequency band)
        cols = np.flatnonzero(changed.all(axis=0))  # fully masked frames (the time span)
        assert rows.size <= 4 and cols.size <= 10
        if rows.size:
            assert np.array_equal(rows, np.arange(rows[0], rows[0] + rows.size))  # one contiguous band
        if cols.size:
            assert np.array_equal(cols, np.arange(cols[0], cols[0] + cols.size))
        # everything changed lies in the band or the span
        covered = np.zeros_like(changed)
        covered[rows, :] = True
        covered[:, cols] = True
        assert not (changed & ~covered).any()
    masked_frac = (y != x).float().mean().item()
    assert 0.05 < masked_frac < 0.35  # masks are drawn, not all zero-width


def test_same_seed_same_augmentation_and_inactive_is_identity():
    x = torch.randn(8, 1, 16, 32)
    aug = Augment(shift=2, freq_mask=3, time_mask=6)
    torch.manual_seed(7)
    a = augment_batch(x, aug)
    torch.manual_seed(7)
    b = augment_batch(x, aug)
    assert torch.equal(a, b)
    assert augment_batch(x, Augment()) is x


@pytest.mark.parametrize("field,value", [("augment_shift", 40), ("augment_freq_mask", 33), ("augment_time_mask", 65)])
def test_settings_the_window_cannot_take_are_a_training_error(field, value):
    pytest.importorskip("timm")
    from edgeemo.train.teacher import config_augment
    from tests.train_fixtures import tiny_config

    cfg = tiny_config(**{field: value})
    with pytest.raises(TrainingError, match=field.removeprefix("augment_")):
        config_augment(cfg.teacher, cfg.features.shape)


def test_teacher_trains_on_augmented_windows_and_validates_on_clean_ones():
    pytest.importorskip("timm")
    from edgeemo.train.teacher import TeacherStage
    from tests.train_fixtures import ctx, teacher_of, tiny_config

    cfg = tiny_config(augment_shift=2, augment_time_mask=8)
    stage = TeacherStage(teacher_of(cfg), cfg.teacher, ctx(cfg))
    seen = []
    stage.model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    x = torch.randn(4, 1, *cfg.features.shape)
    stage.loss(x, torch.zeros(4, 2))
    assert not torch.equal(seen[-1], x)
    stage.model.eval()
    stage.predict(x)
    assert torch.equal(seen[-1], x)


def test_mixup_blends_windows_and_targets_with_one_weight_and_multiplies_masks():
    from edgeemo.train.augment import mixup_batch

    x = torch.randn(16, 1, 8, 12)
    t = torch.cat([torch.randn(16, 2), (torch.arange(16) % 2).float()[:, None], torch.randn(16, 2)], dim=1)
    torch.manual_seed(3)
    mx, mt = mixup_batch(x, t, 0.4, mask_cols=slice(2, 3))
    torch.manual_seed(3)
    lam = torch.distributions.Beta(0.4, 0.4).sample((16,))
    perm = torch.randperm(16)
    torch.testing.assert_close(mx, lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * x[perm])
    for cols in (slice(0, 2), slice(3, 5)):
        torch.testing.assert_close(mt[:, cols], lam[:, None] * t[:, cols] + (1 - lam[:, None]) * t[perm][:, cols])
    torch.testing.assert_close(mt[:, 2], t[:, 2] * t[perm, 2])  # labelled only when both windows were
    assert not torch.equal(mx, x) and lam.min() >= 0 and lam.max() <= 1
    same_x, same_t = mixup_batch(x, t, 0.0)
    assert same_x is x and same_t is t  # off
