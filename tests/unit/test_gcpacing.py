"""The worker loop's GC pacing sets the collector's thresholds, and freezes what is alive when it
starts, inside its block only."""

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


def test_objects_alive_at_the_start_are_frozen_inside_the_block_only() -> None:
    assert gc.get_freeze_count() == 0
    with batch_pacing():
        frozen = gc.get_freeze_count()
        assert frozen > 1_000  # (this process's modules, at least)
        made_inside = [[i] for i in range(10)]
        assert gc.get_freeze_count() == frozen  # later objects are collected as usual
    assert gc.get_freeze_count() == 0
    del made_inside
    with batch_pacing(None):
        assert gc.get_freeze_count() == 0
