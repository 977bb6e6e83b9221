"""The kernel's prefetch hints compile for the arrays it passes and change nothing."""

from __future__ import annotations

import numba
import numpy as np

from streamfs.engine.kernel.prefetch import prefetch, prefetch_cells, prefetch_item


@numba.njit
def _hint_everything(matrix: np.ndarray, vector: np.ndarray) -> int:
    hinted = 0
    for row in range(matrix.shape[0]):
        prefetch_cells(matrix, row, 0, matrix.shape[1])
        prefetch(matrix, row, matrix.shape[1] - 1)
        prefetch_item(vector, row)
        hinted += 1
    return hinted


def test_prefetch_hints_leave_contiguous_and_strided_arrays_unchanged() -> None:
    matrix = np.arange(5 * 37, dtype=np.int64).reshape(5, 37)
    floats = np.linspace(0.0, 1.0, 5 * 9).reshape(5, 9)
    vector = np.arange(5, dtype=np.int64)
    for array in (matrix, floats, matrix[:, 3:20], matrix[::-1]):  # C layout and strided views
        before = array.copy()
        assert _hint_everything(array, vector) == array.shape[0]
        assert np.array_equal(array, before)
    assert np.array_equal(vector, np.arange(5))
