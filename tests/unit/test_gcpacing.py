"""The worker loop's GC pacing sets the collector's thresholds inside its block only."""

from __future__ import annotations

import gc

import pytest

from streamfs.gcpacing import BATCH_THRESHOLDS, batch_pacing


def test_thresholds_hold_inside_the_block_and_come_back_after_an_error() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), batch_pacing():
        assert gc.get_threshold() == BATCH_THRESHOLDS
        raise RuntimeError("the loop failed")
    assert gc.get_threshold() == before


def test_none_leaves_pythons_thresholds() -> None:
    before = gc.get_threshold()
    with batch_pacing(None):
        assert gc.get_threshold() == before
    assert gc.get_threshold() == before
