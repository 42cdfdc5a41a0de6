"""Fixtures shared by the runtime test modules: a small exported bundle (32 mels x 64 frames) and its model.

A module that needs another bundle defines its own ``bundle`` fixture, which overrides these.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime_fixtures import SMALL_CFG, cached_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return cached_bundle(tmp_path_factory, SMALL_CFG)


@pytest.fixture(scope="module")
def model(bundle):
    from edgeemo.runtime import EmotionModel

    return EmotionModel.load(bundle)
