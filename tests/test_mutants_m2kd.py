"""Tests that kill mutation survivors of plugins/m2kd (docs/testing.md; the module is only partly
reviewed): the memory counts of the paper's Table 2 by hand, edges and messages."""

from __future__ import annotations

import pytest

from avalanche_sst.plugins.m2kd import exemplar_bytes, m2kd_memory_bytes


def test_exemplar_bytes_by_hand():
    assert exemplar_bytes(0, (1, 2, 2)) == 0  # no exemplars: no memory
    assert exemplar_bytes(2, (1, 1, 1)) == 2  # one-pixel images are images
    assert exemplar_bytes(3, (1, 2, 2), bytes_per_value=4) == 3 * 4 * 4
    with pytest.raises(ValueError, match=r"^need n_exemplars >= 0 and a positive image_shape, got -1, \(1, 2\)$"):
        exemplar_bytes(-1, (1, 2))


def test_m2kd_memory_bytes_by_hand():
    assert m2kd_memory_bytes(0, [0]) == 0
    assert m2kd_memory_bytes(10, [5, 7], bytes_per_id=2) == 10 * 2 + 12
    for owner_ids, snapshots in ((-1, []), (0, [3, -1])):
        with pytest.raises(ValueError, match=r"^owner_ids and snapshot_bytes must be >= 0$"):
            m2kd_memory_bytes(owner_ids, snapshots)
