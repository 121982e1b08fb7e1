"""CostMeter against hand counts, and compute-matched budgets (issue 14).

Every run: 3 parts of 20 training + 4 validation samples, 2 epochs, batch 10.
Unit: forward + backward of one sample = 1; a forward alone = 1/3.
"""

from __future__ import annotations

import pytest
import torch
from avalanche.training import EWC, Cumulative, LwF, Naive
from avalanche.training.templates import SupervisedTemplate

from avalanche_sst.benchmarks import same_class_accumulating
from avalanche_sst.experiments.budget import (
    baseline_step_cost,
    framework_step_costs,
    matched_epochs,
    preset_matched_epochs,
    sst_matched_epochs,
)
from avalanche_sst.metrics import make_evaluator
from avalanche_sst.metrics.cost import CostMeter
from avalanche_sst.models import resnet_cifar, scaling_factors
from avalanche_sst.plugins import LwMPlugin, StepwiseCosinePlugin
from avalanche_sst.strategies import AODStrategy, DMLStrategy, HPOStrategy, MultiStepSST

N, V, E, B = 20, 4, 2, 10
THIRD = 1.0 / 3.0


@pytest.fixture(scope="module")
def bench(make_data):
    bm = same_class_accumulating(make_data(18, seed=0), make_data(5, seed=1), ratios=(1, 1, 1),
                                 validation_fraction=1 / 6, padding=1)
    assert [len(e.dataset) for e in bm.train_stream] == [N] * 3
    assert [len(e.dataset) for e in bm.valid_stream] == [V] * 3
    return bm


def model():
    torch.manual_seed(0)
    return resnet_cifar(depth=8, num_classes=4, in_channels=1, width=4)


def common(net, meter, **extra):
    plugins = [meter, *extra.pop("plugins", [])]
    return dict(model=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9),
                criterion=torch.nn.CrossEntropyLoss(),
                train_mb_size=B, train_epochs=E, eval_mb_size=64, evaluator=make_evaluator(), plugins=plugins,
                **extra)


def run(strategy, bm, steps=3):
    for exp in bm.train_stream[:steps]:
        strategy.train(exp)


def costs_of(cls, bm, steps=3, **extra):
    meter = CostMeter()
    run(cls(**common(model(), meter, **extra)), bm, steps)
    return meter.step_costs


def test_fine_tuning_and_cumulative(bench):
    assert costs_of(Naive, bench) == pytest.approx([E * N] * 3)  # 40 each
    assert costs_of(Cumulative, bench) == pytest.approx([E * N, E * 2 * N, E * 3 * N])  # the data grows


def test_lwf_and_lwm_add_a_teacher_forward_after_step_one(bench):
    expected = [E * N, E * N * (1 + THIRD), E * N * (1 + THIRD)]  # 40, 53.3, 53.3
    assert costs_of(LwF, bench, alpha=1.0, temperature=2.0) == pytest.approx(expected)
    assert costs_of(SupervisedTemplate, bench, plugins=[LwMPlugin()]) == pytest.approx(expected)


def test_ewc_adds_one_pass_per_sample_for_the_importances(bench):
    assert costs_of(EWC, bench, ewc_lambda=1.0) == pytest.approx([E * N + N] * 3)  # 60 each


def test_hpo_counts_every_candidate_and_its_validation(bench):
    got = costs_of(HPOStrategy, bench, steps=2, valid_stream=bench.valid_stream, lrs=(0.01, 0.001))
    assert got == pytest.approx([E * N, 2 * (E * N + V * THIRD)])  # 40, 82.7


def test_dml_counts_both_students_and_the_choice(bench):
    got = costs_of(DMLStrategy, bench, steps=2, valid_stream=bench.valid_stream)
    assert got == pytest.approx([E * N, 2 * E * N + 2 * V * THIRD])  # step 1 trains one network


def test_aod_counts_two_students_on_two_views(bench):
    net = model()
    n = sum(f.bn.weight.numel() for f in scaling_factors(net))
    with torch.no_grad():  # spread-out |gamma| as after SST, so eq. 4's range is not empty
        start = 0
        for f in scaling_factors(net):
            k = f.bn.weight.numel()
            f.bn.weight.copy_(torch.linspace(0.0, 1.5, n)[start:start + k])
            start += k
    meter = CostMeter()
    strategy = AODStrategy(**common(net, meter, valid_stream=bench.valid_stream))
    strategy.train(bench.train_stream[1])
    assert meter.step_costs == pytest.approx([4 * E * N + 2 * V * THIRD])  # 162.7
    assert meter.step_breakdown[0]["valid"] == pytest.approx(2 * V * THIRD)


def test_multi_step_sst_counts_its_phases_as_predicted(bench):
    meter = CostMeter()
    strategy = MultiStepSST(model=model(), valid_stream=bench.valid_stream, epochs_scratch=E, epochs_sst=E,
                            epochs_aod=E, train_mb_size=B, eval_mb_size=64, evaluator=make_evaluator(),
                            plugins=[meter])
    run(strategy, bench)
    step1 = E * N + E * N  # scratch + SST with cross-entropy
    aod = 4 * E * N + 2 * V * THIRD
    msl = E * N * (1 + THIRD) + (E + 1) * V * THIRD  # teacher forwards; teacher once + student per epoch
    hand = [step1, aod + msl, aod]  # 80, 220, 162.7: nothing prepared after the last step
    assert meter.step_costs == pytest.approx(hand)
    assert framework_step_costs([N] * 3, [V] * 3, epochs_scratch=E, epochs_sst=E, epochs_aod=E) == pytest.approx(hand)
    assert [e.value for e in strategy.sst_events if e.tag == "cost/sample_passes"] == pytest.approx(hand)


def test_state_dict_round_trip_resumes_the_list(tmp_path, bench):
    meter = CostMeter()
    run(Naive(**common(model(), meter)), bench, steps=2)
    torch.save(meter.state_dict(), tmp_path / "cost.pt")
    resumed = CostMeter()
    resumed.load_state_dict(torch.load(tmp_path / "cost.pt", weights_only=True))
    assert resumed.step_costs == meter.step_costs and resumed.step_breakdown == meter.step_breakdown
    strategy = Naive(**common(model(), resumed))
    strategy.train(bench.train_stream[2])
    assert resumed.step_costs == pytest.approx([E * N] * 3)


def test_add_rejects_bad_input():
    meter = CostMeter()
    with pytest.raises(ValueError, match="kind"):
        meter.add(1.0, "gpu")
    with pytest.raises(ValueError, match="sample_passes"):
        meter.add(-1.0)


# --- compute-matched budgets ------------------------------------------------------------------


def test_framework_costs_and_matched_epochs_by_hand():
    costs = framework_step_costs([12000] * 4, [1200] * 4, epochs_scratch=10, epochs_sst=5, epochs_aod=5)
    # 15 N; 20 N + 800 + 20/3 N + 2400; the same; 20 N + 800 (no preparation after the last step)
    assert costs == pytest.approx([180000, 323200, 323200, 240800])
    assert matched_epochs(costs, [12000] * 4) == [15, 27, 27, 20]
    predicted = sst_matched_epochs([12000] * 4, [1200] * 4, epochs_scratch=10, epochs_sst=5, epochs_aod=5)
    assert predicted == [15, 27, 27, 20]
    # LwF pays 4/3 per sample after step 1; EWC one pass per step for the importances
    assert matched_epochs(costs, [12000] * 4, "lwf") == [15, 20, 20, 15]
    assert matched_epochs(costs, [12000] * 4, "ewc") == [14, 26, 26, 19]
    with pytest.raises(ValueError, match="method"):
        matched_epochs(costs, [12000] * 4, "cumulative")
    with pytest.raises(ValueError, match="step_costs"):
        matched_epochs(costs[:2], [12000] * 4)


@pytest.mark.parametrize("method", ["finetune", "lwf", "ewc"])
def test_matched_baseline_costs_the_framework_within_one_epoch(bench, method):
    framework = framework_step_costs([N] * 3, [V] * 3, epochs_scratch=E, epochs_sst=E, epochs_aod=E)
    epochs = matched_epochs(framework, [N] * 3, method)
    assert epochs == {"finetune": [4, 11, 8], "lwf": [4, 8, 6], "ewc": [3, 10, 7]}[method]
    meter = CostMeter()
    cls, extra = {"finetune": (Naive, {}), "lwf": (LwF, {"alpha": 1.0, "temperature": 2.0}),
                  "ewc": (EWC, {"ewc_lambda": 1.0})}[method]
    schedule = StepwiseCosinePlugin(lrs=(0.01, 0.001), epochs=epochs)
    run(cls(**common(model(), meter, plugins=[schedule], **extra)), bench)
    for k, (got, want) in enumerate(zip(meter.step_costs, framework)):
        assert abs(got - want) <= baseline_step_cost(method, k, N)[0], (k, got, want)


def test_preset_matched_epochs_reads_the_preset_and_the_streams(bench):
    from types import SimpleNamespace

    preset = SimpleNamespace(epochs_scratch=E, sst_epochs=E, aod_epochs=E, sst_kwargs={})
    assert preset_matched_epochs(preset, bench.train_stream, bench.valid_stream) == (4, 11, 8)
    # sst_kwargs override the preset: no MSL -> the SST phase costs E N, no teacher decisions
    preset.sst_kwargs = {"use_msl": False, "epochs_aod": 1}
    assert preset_matched_epochs(preset, bench.train_stream, bench.valid_stream) == (4, 6, 4)
