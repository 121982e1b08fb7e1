"""The readings of experiments/diagnose_readme_m2kd.py, checked by hand on a tiny M2KD run."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch

from test_m2kd import _bench, _run, _strategy

_spec = importlib.util.spec_from_file_location(
    "diagnose_readme_m2kd", Path(__file__).resolve().parents[1] / "experiments" / "diagnose_readme_m2kd.py")
diagnose = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(diagnose)


@pytest.fixture(scope="module")
def one_step():
    bench = _bench(2)
    s = _strategy(prune_ratio=0.75, epochs=2, finetune=1)
    _run(s, bench, 1)
    return s, bench


def test_free_share_after_a_step_by_hand(one_step):
    s, _ = one_step
    layers = s.m2kd._layers()
    # each layer releases round(0.75 * n) of its n weights (all free before step 1)
    free = sum(round(0.75 * m.weight.numel()) for _, m in layers)
    assert diagnose.free_share(s.m2kd) == pytest.approx(free / sum(m.weight.numel() for _, m in layers))


def test_teacher_max_old_is_the_snapshots_largest_old_score_by_hand(one_step):
    s, bench = one_step
    exp = bench.train_stream[1]
    snapshot = copy.deepcopy(s.m2kd.network).eval()  # right after step 1, the model is snapshot 0
    data = exp.dataset.eval()
    x, *_ = next(iter(torch.utils.data.DataLoader(data, batch_size=len(data), collate_fn=data.collate_fn)))
    with torch.no_grad():
        expected = torch.sigmoid(snapshot(x)[:, :2]).max(1).values.mean().item()
    assert 0.0 < expected < 1.0
    assert diagnose.teacher_max_old(s.m2kd, exp, seen=2) == pytest.approx(expected, abs=1e-5)
    assert diagnose.teacher_max_old(s.m2kd, exp, seen=0) != diagnose.teacher_max_old(s.m2kd, exp, seen=0)  # nan


def test_variants_and_the_doc_block(tmp_path):
    assert diagnose.parse_variant("lwf_mc") == {"teachers": "last", "prune_ratio": 0.0, "lam": 0.0}
    assert diagnose.parse_variant("lam=0,teachers=last") == {"lam": 0, "teachers": "last"}
    page = tmp_path / "page.md"
    page.write_text("a\n<!-- t:start -->\nold\n<!-- t:end -->\nb\n")
    diagnose.insert_between_markers(page, "t", ["| x |", "| 1 |"])
    assert page.read_text() == "a\n<!-- t:start -->\n| x |\n| 1 |\n<!-- t:end -->\nb\n"
    with pytest.raises(ValueError, match="no <!-- u:start -->"):
        diagnose.insert_between_markers(page, "u", [])
