"""Ada-QPacknet: adaptive pruning (Alg. 1), the quantized multi-task model and the strategy."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from avalanche_sst.functional.adaptive_pruning import (
    draw_candidate_masks,
    fitness,
    select_candidate,
    validate_sparsity_bounds,
    weighted_sparsity_left,
)
from avalanche_sst.benchmarks.scenarios import class_incremental, task_incremental
from avalanche_sst.models.quantized_multitask import QuantizedMultiTaskModel
from avalanche_sst.functional.quantization import POSITION_BITS
from avalanche_sst.strategies.ada_qpacknet import AdaQPackNet
from conftest import make_images

V_MIN, V_MAX = 0.45, 0.85


def tiny_net(num_classes: int = 2) -> nn.Module:
    """Conv + BatchNorm (per-task statistics) + hidden Linear + head: ~2.5k weights."""
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 36, 16), nn.ReLU(), nn.Linear(16, num_classes))


@pytest.fixture(scope="module")
def three_tasks():
    torch.manual_seed(0)
    return task_incremental(make_images(30, seed=0, classes=6), make_images(10, seed=1, classes=6),
                            classes_per_step=2, seed=0, validation_fraction=0.25, augment=False)


def strategy(bm, **kw):
    args = dict(population=3, search_epochs=1, full_epochs=1, train_mb_size=16, eval_mb_size=64)
    args.update(kw)
    return AdaQPackNet(model=tiny_net(), valid_stream=bm.valid_stream, **args)


# --- pure functions of Alg. 1 ---------------------------------------------------------


def test_candidates_keep_only_available_positions_at_drawn_density():
    available = [torch.rand(6, 10, generator=torch.Generator().manual_seed(1)) < 0.7, torch.ones(40, dtype=torch.bool)]
    cands = draw_candidate_masks(available, 16, V_MIN, V_MAX, torch.Generator().manual_seed(0))
    assert len(cands) == 16
    for cand in cands:
        for s, mask, avail in zip(cand.sparsity, cand.masks, available):
            assert V_MIN <= s <= V_MAX
            assert not bool((mask & ~avail).any())
            n = int(avail.sum())
            assert int(mask.sum()) == round((1 - s) * n)
            assert 1 - V_MAX - 0.5 / n <= int(mask.sum()) / n <= 1 - V_MIN + 0.5 / n
    again = draw_candidate_masks(available, 16, V_MIN, V_MAX, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for c, d in zip(cands, again) for a, b in zip(c.masks, d.masks))
    assert len({tuple(c.sparsity) for c in cands}) == 16


def test_weighted_sparsity_left_eq7_hand_computed():
    # layer 1: 4 positions, 1 used -> |theta| * Y = 4 * 3/4 = 3; layer 2: 2 of 2 used -> 0
    assert weighted_sparsity_left([torch.tensor([True, False, False, False]), torch.tensor([True, True])]) == 3.0


def test_fitness_and_selection_hand_computed():
    # 0.9 * [.5, 1, .9] + 0.1 * [100, 20, 60] / 100 = [.55, .92, .87]
    scores = fitness([0.5, 1.0, 0.9], [100, 20, 60], 0.9, 0.1)
    assert torch.allclose(scores, torch.tensor([0.55, 0.92, 0.87], dtype=torch.float64))
    assert select_candidate([0.5, 1.0, 0.9], [100, 20, 60]) == 1
    # a slightly less accurate but much sparser candidate wins: .882 + .1 > .9 + .05
    assert select_candidate([0.98, 1.0], [100, 50]) == 0
    assert select_candidate([0.0, 0.0], [0, 0]) == 0  # all-zero terms: no division by zero


def test_bad_sparsity_bounds_raise():
    with pytest.raises(ValueError, match="v_min <= v_max"):
        validate_sparsity_bounds(0.9, 0.5)
    with pytest.raises(ValueError, match="population"):
        draw_candidate_masks([torch.ones(3, dtype=torch.bool)], 0, V_MIN, V_MAX, torch.Generator())


# --- the model -----------------------------------------------------------------------


def test_model_stores_codes_and_refuses_untrained_labels():
    torch.manual_seed(0)
    model = QuantizedMultiTaskModel(tiny_net())
    assert [n for n, _ in model.quantized_layers()] == ["0", "4"]  # the head "6" stays fp32 per task
    masks = [torch.rand(m.weight.shape) < 0.5 for _, m in model.quantized_layers()]
    model.begin_task(3, masks)
    model.commit_task(2, model.quantize_live(2))
    for (name, m), mask, (book, codes) in zip(model.quantized_layers(), masks, model.task_codes(3)):
        assert codes.dtype == torch.uint8 and int(codes.max()) < 4 and book.numel() <= 4
        decoded = model.task_substitutions(3)[f"{name}.weight"]
        assert torch.unique(decoded[mask]).numel() <= 4 and bool((decoded[~mask] == 0).all())
        assert torch.equal(m.used_bits, mask.to(torch.uint8) * 2)
        assert bool((m.weight == 0).all())  # the float weights are discarded
    x = torch.randn(5, 1, 8, 8)
    with pytest.raises(ValueError, match="task label 0 was never trained"):
        model(x, torch.zeros(5, dtype=torch.long))
    assert model(x, torch.full((5,), 3)).shape == (5, 2)
    model.unseen_tasks = "zeros"  # the sweep's choice: it evaluates whole streams, scores seen tasks
    assert torch.equal(model(x, torch.zeros(5, dtype=torch.long)), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="unseen_tasks"):
        QuantizedMultiTaskModel(tiny_net(), unseen_tasks="skip")


# --- the strategy ----------------------------------------------------------------------


def test_zero_forgetting_budget_density_selection_and_reload(three_tasks):
    torch.manual_seed(0)
    bm = three_tasks
    s = strategy(bm)
    probe = torch.randn(7, 1, 8, 8)
    right_after = {}
    for t, exp in enumerate(bm.train_stream):
        s.train(exp, eval_streams=[])
        with torch.no_grad():
            right_after[t] = s.model(probe, t).clone()
    model = s.model
    with torch.no_grad():
        for t in range(3):
            assert torch.equal(model(probe, t), right_after[t])  # bit-identical: zero forgetting
    # the bits at every position sum to <= 32, and equal what the tasks own there
    for i, used in enumerate(model.used_bits()):
        owned = sum(model.task_masks(t)[i].to(torch.int64) * model.task_bits(t) for t in range(3))
        assert torch.equal(used.to(torch.int64), owned) and int(used.max()) <= POSITION_BITS
    for rep in s.task_reports:
        # every layer's density lies inside its drawn bounds, and matches the drawn sparsity
        # (three tasks of <= 8 bits leave every position available, so n = the layer's size)
        for d, sp, (_, layer) in zip(rep["density"], rep["drawn_sparsity"], model.quantized_layers()):
            half = 0.5 / layer.weight.numel() + 1e-9  # rounding to whole positions
            assert 1 - V_MAX - half <= d <= 1 - V_MIN + half and abs(d - (1 - sp)) <= half
        a, y = rep["candidate_accuracy"], rep["candidate_sparsity_left"]
        by_hand = [0.9 * ai / max(a) + 0.1 * yi / max(y) for ai, yi in zip(a, y)]
        assert rep["chosen"] == by_hand.index(max(by_hand))
        assert rep["accuracy_quantized"] >= rep["accuracy_fp32"] - 0.01 or rep["bits"] == 8
        assert 0 < rep["capacity_fraction"] < 1
    for t in range(3):
        for book, codes in model.task_codes(t):
            assert int(codes.max()) < 2 ** model.task_bits(t) and book.numel() <= 2 ** model.task_bits(t)
    # save / load (weights_only=True) into a fresh model: still bit-identical
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = QuantizedMultiTaskModel(tiny_net())
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    fresh.eval()
    with torch.no_grad():
        for t in range(3):
            assert torch.equal(fresh(probe, t), right_after[t])
        mixed = fresh(probe, torch.tensor([0, 1, 2, 0, 1, 2, 0]))
    # a mixed batch routes each sample to its task (other batch sizes: equal up to float blocking)
    assert torch.allclose(mixed[1], right_after[1][1], atol=1e-6)
    assert torch.allclose(mixed[5], right_after[2][5], atol=1e-6)
    # Adam, annealed (cosine, per iteration) to lr_min by the end of the full training
    assert isinstance(s.optimizer, torch.optim.Adam)
    assert s.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    results = s.eval(bm.test_stream)
    assert results["Top1_Acc_Stream/eval_phase/test_stream/Task002"] > 0.5
    assert s.method_state()["task_reports"][2]["task"] == 2
    tags = {e.tag for e in s.sst_events}
    assert {"adaqpacknet/bits", "adaqpacknet/accuracy_quantized", "adaqpacknet/capacity_fraction",
            "adaqpacknet/sparsity/0"} <= tags


def test_bit_width_is_the_first_within_delta(three_tasks, monkeypatch):
    s = strategy(three_tasks, delta=1.0)
    s.model.begin_task(0, s.model.available_masks(8))
    # fp32 0.90; 2 bits 0.50, 3 bits 0.85, 4 bits 0.895 (>= 0.90 - 0.01): 4 bits, never 5
    scripted = iter([0.90, 0.50, 0.85, 0.895, 0.99])
    monkeypatch.setattr(s, "_val_accuracy", lambda task: next(scripted))
    report = s._quantize_and_commit(0)
    assert report["bits"] == 4 and report["met_delta"] == 1
    assert report["accuracy_fp32"] == 0.90 and report["accuracy_quantized"] == 0.895
    assert s.model.task_bits(0) == 4


def test_ablations_pruning_only_and_quantization_only(three_tasks):
    torch.manual_seed(0)
    bm = three_tasks
    prune_only = strategy(bm, quantize=False)
    for exp in bm.train_stream[:2]:
        prune_only.train(exp, eval_streams=[])
    m = prune_only.model
    assert m.task_bits(0) == 32 and m.task_bits(1) == 32
    for a, b in zip(m.task_masks(0), m.task_masks(1)):
        assert not bool((a & b).any())  # a 32-bit task fills its positions
    quant_only = strategy(bm, prune=False)
    quant_only.train(bm.train_stream[0], eval_streams=[])
    assert quant_only.task_reports[0]["density"] == [1.0, 1.0]
    assert quant_only.model.task_bits(0) <= 8


def test_bad_inputs_raise(three_tasks):
    bm = three_tasks
    with pytest.raises(ValueError, match="v_min <= v_max"):
        strategy(bm, v_min=0.9, v_max=0.5)
    for bad in (0, 9):
        with pytest.raises(ValueError, match="max_bits must be in 1..8"):
            strategy(bm, max_bits=bad)
    with pytest.raises(ValueError, match="valid_stream"):
        AdaQPackNet(model=tiny_net(), valid_stream=None)
    with pytest.raises(ValueError, match="quantizer"):
        strategy(bm, quantizer="log")
    s = strategy(bm)
    s.train(bm.train_stream[0], eval_streams=[])
    with pytest.raises(ValueError, match="task label 1 was never trained"):
        s.eval(bm.test_stream[1:2])


def test_class_incremental_scenario_is_refused():
    ci = class_incremental(make_images(20, seed=0), make_images(5, seed=1), classes_per_step=2, seed=0,
                           validation_fraction=0.25, augment=False)
    s = AdaQPackNet(model=tiny_net(4), valid_stream=ci.valid_stream, population=2, search_epochs=1, full_epochs=1)
    with pytest.raises(ValueError, match="task-incremental"):
        s.train(ci.train_stream[0], eval_streams=[])


# --- sweep registration -----------------------------------------------------------------


def _ctx(bm, model, seed=0):
    from avalanche_sst.experiments.presets import Preset
    from avalanche_sst.experiments.registry import StrategyContext
    from avalanche_sst.metrics import make_evaluator

    cfg = Preset(batch_size=16, eval_batch_size=64, epochs_scratch=2, epochs_finetune=2, lr_scratch=0.05,
                 method_kwargs={})
    return StrategyContext(model=model, config=cfg, evaluator=make_evaluator(), device=torch.device("cpu"),
                           valid_stream=bm.valid_stream, benchmark=bm, seed=seed)


def _checkpoint(method, strategy) -> dict:
    buffer = io.BytesIO()
    torch.save({"model": strategy.model.state_dict(), "method": method.state_dict(strategy)}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_sweep_method_resumes_mid_stream(three_tasks):
    from avalanche_sst.experiments.methods import get_method

    bm = three_tasks
    method = get_method("adaqpacknet:population=2,search_epochs=1,full_epochs=1")
    assert method.settings == ("task_incremental",)
    torch.manual_seed(0)
    first = method.build(_ctx(bm, tiny_net()))
    assert (first.train_mb_size, first.eval_mb_size) == (16, 64)  # the preset's batch sizes
    first.train(bm.train_stream[0], eval_streams=[], reset_optimizer_state=True)
    probe = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        before = first.model(probe, 0).clone()
    state = _checkpoint(method, first)
    resumed = method.build(_ctx(bm, tiny_net()))
    resumed.model.load_state_dict(state["model"])
    method.load_state_dict(resumed, state["method"], list(bm.train_stream)[:1])
    assert resumed.task_reports[0]["bits"] == first.task_reports[0]["bits"]
    resumed.train(bm.train_stream[1], eval_streams=[], reset_optimizer_state=True)
    with torch.no_grad():
        assert torch.equal(resumed.model(probe, 0), before)
    assert resumed.model.trained_tasks == [0, 1]
    # the ablation variants are plain overrides
    assert get_method("adaqpacknet:quantize=False").overrides == {"quantize": False}
    with pytest.raises(ValueError, match="no argument"):
        get_method("adaqpacknet:bitz=3")


def _resumed_after_first_task(method, bm):
    """``method`` trained on task 0, checkpointed (weights_only), rebuilt and restored."""
    from avalanche_sst.models import mlp

    first = method.build(_ctx(bm, mlp(64, (16,), 2)))
    first.train(bm.train_stream[0], eval_streams=[])
    state = _checkpoint(method, first)
    resumed = method.build(_ctx(bm, mlp(64, (16,), 2)))
    resumed.model.load_state_dict(state["model"])
    method.load_state_dict(resumed, state["method"], list(bm.train_stream)[:1])
    return resumed, state


def test_packnet_and_si_run_and_resume(three_tasks):
    from avalanche_sst.experiments.methods import get_method
    from avalanche_sst.experiments.methods.packnet import equal_share_prune_proportions

    assert equal_share_prune_proportions(3) == [1 - 1 / 3, 1 - 1 / 2, 0.0]
    bm = three_tasks
    packnet = get_method("packnet")
    torch.manual_seed(0)
    pn2, state = _resumed_after_first_task(packnet, bm)
    biases = [p for n, p in pn2.model.named_parameters() if n.endswith("bias")]
    assert biases and not any(p.requires_grad for p in biases)  # frozen as after freeze_pruned
    probe = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        before = pn2.model(probe, torch.zeros(4, dtype=torch.long)).clone()
    pn2.train(bm.train_stream[1], eval_streams=[])
    with torch.no_grad():
        assert torch.equal(pn2.model(probe, torch.zeros(4, dtype=torch.long)), before)
    # equal shares of 3 tasks: each of the two trained tasks owns ~1/3 of the 64*16 + 16*2 = 1056
    # weights, 33 bits each; the first also holds the 16 + 2 frozen biases at 32 bits
    caps = packnet.state_dict(pn2)["capacity_fractions"]
    assert len(caps) == 2 and abs(caps[0] - 18 / 1056 - 33 / 32 / 3) < 0.01 and abs(caps[1] - 33 / 32 / 3) < 0.01
    report = packnet.report(pn2)
    assert report["capacity_total"] == pytest.approx(100 * sum(caps))
    assert report["capacity_mean"] == pytest.approx(50 * sum(caps))
    with pytest.raises(ValueError, match="BatchNorm-free"):
        packnet.build(_ctx(bm, tiny_net()))

    si = get_method("si")
    s2, state = _resumed_after_first_task(si, bm)
    from avalanche.training.plugins import SynapticIntelligencePlugin
    from avalanche_sst.experiments.method_state import plugin_of

    imp = plugin_of(s2, SynapticIntelligencePlugin).ewc_data[1]
    assert set(imp) == set(state["method"]["importance"]) and len(imp) > 0
    s2.train(bm.train_stream[1], eval_streams=[])


def test_cost_meter_sees_search_and_quantization(three_tasks):
    from avalanche_sst.metrics.cost import CostMeter

    bm = three_tasks
    meter = CostMeter()
    torch.manual_seed(0)
    s = strategy(bm, population=2, search_epochs=2, full_epochs=1, plugins=[meter])
    s.train(bm.train_stream[0], eval_streams=[])
    n_train, n_valid = len(bm.train_stream[0].dataset), len(bm.valid_stream[0].dataset)
    bits_tried = s.task_reports[0]["bits"] - 2 + 1
    breakdown = meter.step_breakdown[0]
    # 2 candidates x 2 epochs of search, then 1 full epoch
    assert breakdown["train"] == pytest.approx((2 * 2 + 1) * n_train)
    # a validation pass per candidate, one for fp32, one per bit-width tried
    assert breakdown["valid"] == pytest.approx((2 + 1 + bits_tried) * n_valid / 3)


def test_packnet_report_hand_count():
    """Two trained tasks on Linear(4, 3) + Linear(3, 2): 18 weights, 5 biases, 576 fp32 weight bits."""
    from types import SimpleNamespace

    from avalanche.models.packnet import PackNetModel
    from avalanche_sst.experiments.methods.packnet import packnet_report

    model = PackNetModel(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)))
    first, second = model.wrappee[0], model.wrappee[1]
    for m in model.modules():  # the state after two freeze_pruned calls
        if hasattr(m, "_task_count"):
            m._task_count.fill_(2)
    first.task_index.copy_(torch.tensor([[0, 0, 1, 255], [0, 1, 1, 2], [0, 0, 0, 255]], dtype=torch.uint8))
    second.task_index.copy_(torch.tensor([[1, 2, 0], [255, 1, 1]], dtype=torch.uint8))
    # task 0 owns 7 weights + the 5 biases, task 1 owns 6; index 2 is the untrained pool, 255 pruned
    report = packnet_report(SimpleNamespace(model=model))
    cap1, cap2 = 100 * (7 * 33 + 5 * 32) / 576, 100 * (6 * 33) / 576
    assert report["capacity/task1"] == pytest.approx(cap1) and report["capacity/task2"] == pytest.approx(cap2)
    assert report["capacity_total"] == pytest.approx(cap1 + cap2)
    assert report["capacity_mean"] == pytest.approx((cap1 + cap2) / 2)
    assert report["owned_weights"] == pytest.approx(100 * 13 / 18)


def _train_two_tasks(method_name, bm):
    from avalanche_sst.experiments.methods import get_method
    from avalanche_sst.models import mlp, multi_head

    torch.manual_seed(0)
    strategy = get_method(method_name).build(_ctx(bm, multi_head(mlp(64, (16,), 2))))
    strategy.train(bm.train_stream[0], eval_streams=[])
    after_first = [p.detach().clone() for p in strategy.model.parameters()]
    strategy.train(bm.train_stream[1], eval_streams=[])
    return strategy, after_first


def test_si_penalty_is_live_on_a_cpu_model(three_tasks):
    """Avalanche's SI snapshots alias the CPU parameters (importances all 0, SI = fine-tuning);
    CopyingSIPlugin's are copies: after task 1 the importances are positive, the penalty of a
    known displacement is lambda/2 * sum(Omega * delta^2) (Zenke et al. eq. 4), and SI's weights
    after task 2 differ from fine-tuning's with the same seed and data."""
    from avalanche_sst.experiments.method_state import plugin_of
    from avalanche_sst.experiments.methods.packnet import CopyingSIPlugin

    bm = three_tasks
    si, _ = _train_two_tasks("si:si_lambda=1000", bm)
    ft, ft_first = _train_two_tasks("finetune", bm)
    plugin = plugin_of(si, CopyingSIPlugin)
    anchor, omega = plugin.ewc_data
    shared = "model.features.1.weight"  # the hidden layer both tasks train
    assert float(omega[shared].data.max()) > 0 and float(omega[shared].data.abs().sum()) > 0
    with torch.no_grad():
        moved = [(name, p, p.detach().clone()) for name, p in si.model.named_parameters() if name in anchor]
        for name, p, _ in moved:
            p.copy_(anchor[name].data.view_as(p) + 0.1)
        penalty = CopyingSIPlugin.compute_ewc_loss(si.model, plugin.ewc_data, plugin.excluded_parameters,
                                                   device="cpu", lambd=1000.0)
        expected = 1000.0 / 2 * sum(float(omega[name].data.sum()) * 0.01 for name, _, _ in moved)
        for _, p, saved in moved:
            p.copy_(saved)
    assert float(penalty) == pytest.approx(expected, rel=1e-4) and float(penalty) != 0.0
    si_weights = dict(si.model.named_parameters())
    ft_weights = dict(ft.model.named_parameters())
    assert not torch.equal(si_weights[shared], ft_weights[shared])
