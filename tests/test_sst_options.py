"""Options beyond the paper, diagnostics and argument checks of the SST framework (issue 14)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from avalanche.core import SupervisedPlugin

from avalanche_sst.benchmarks import TensorImageDataset, same_class_accumulating
from avalanche_sst.metrics import make_evaluator
from avalanche_sst.models import resnet_cifar, scaling_factors
from avalanche_sst.plugins import ReinitPlugin, StepwiseCosinePlugin, diverse_reinit_
from avalanche_sst.functional.reinit import layer_reinit_ranges, mean_abs_split
from avalanche_sst.strategies import HPOStrategy, MultiStepSST
from avalanche_sst.strategies.aod import AODStrategy, consistency_loss


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return resnet_cifar(depth=8, num_classes=3, in_channels=1, width=4)


def tiny_benchmark(parts=(1, 1, 1)):
    g = torch.Generator().manual_seed(123)
    labels = torch.arange(3).repeat_interleave(40)
    images = (labels.view(-1, 1, 1, 1) * 80 + torch.randint(0, 60, (120, 1, 8, 8), generator=g)).to(torch.uint8)
    test_labels = torch.arange(3).repeat_interleave(10)
    test_images = test_labels.view(-1, 1, 1, 1) * 80 + torch.randint(0, 60, (30, 1, 8, 8), generator=g)
    test_images = test_images.to(torch.uint8)
    return same_class_accumulating(TensorImageDataset(images, labels), TensorImageDataset(test_images, test_labels),
                                   ratios=parts, seed=0, validation_fraction=0.25, padding=1)


def multi_step(bm, **kwargs):
    args = dict(valid_stream=bm.valid_stream, epochs_scratch=1, epochs_sst=2, epochs_aod=1, train_mb_size=16,
                eval_mb_size=64, evaluator=make_evaluator())
    args.update(kwargs)
    return MultiStepSST(model=tiny_model(), **args)


class TwoLayers(nn.Module):
    """Two conv + BN layers: 11 and 5 scaling factors."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 11, 3, padding=1), nn.BatchNorm2d(11)
        self.conv2, self.bn2 = nn.Conv2d(11, 5, 3, padding=1), nn.BatchNorm2d(5)

    def forward(self, x):
        return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))).mean((2, 3))


# --- per-layer re-init range ------------------------------------------------------------------


LAYER1 = torch.linspace(0.1, 1.1, 11)  # 0.1, 0.2, ..., 1.1
LAYER2 = torch.tensor([0.04, 0.0, 0.03, 0.01, 0.02])  # a low-scale layer (order must not matter)


def test_layer_ranges_are_each_layers_own_quantiles():
    # Target_r + I = 0.4, 1 - I = 0.9. Layer 1: positions 4 and 9 -> 0.5, 1.0.
    # Layer 2 sorted 0, .01, .02, .03, .04: positions 1.6 and 3.6 -> 0.016, 0.036.
    ranges = layer_reinit_ranges([LAYER1, LAYER2], 0.3, 0.1)
    assert ranges[0] == pytest.approx((0.5, 1.0))
    assert ranges[1] == pytest.approx((0.016, 0.036))
    with pytest.raises(ValueError, match="margin"):
        layer_reinit_ranges([LAYER1], 0.3, 0.4)


def test_layer_scope_refills_each_layer_at_its_own_scale_on_a_two_layer_model():
    model = TwoLayers()
    with torch.no_grad():
        model.bn1.weight.copy_(LAYER1)
        model.bn2.weight.copy_(LAYER2)
    # The 0.3 * 16 -> 5 globally smallest: layer 2's five values (0 .. 0.04).
    masks, (low, high) = diverse_reinit_(model, 0.3, 0.1, torch.Generator().manual_seed(0), scope="layer")
    assert not masks[0].any() and masks[1].all()
    assert torch.equal(model.bn1.weight.detach(), LAYER1)
    assert ((model.bn2.weight >= 0.016 - 1e-7) & (model.bn2.weight < 0.036 + 1e-7)).all()
    assert (low, high) == pytest.approx((0.016, 0.036))

    glob = TwoLayers()
    with torch.no_grad():
        glob.bn1.weight.copy_(LAYER1)
        glob.bn2.weight.copy_(LAYER2)
    _, (g_low, g_high) = diverse_reinit_(glob, 0.3, 0.1, torch.Generator().manual_seed(0))
    # The paper's global range over all 16 (0, .01, .., .04, .1, .., 1.1): positions 6 and 13.5 -> 0.2, 0.95.
    assert (g_low, g_high) == pytest.approx((0.2, 0.95))
    assert (glob.bn2.weight >= 0.2 - 1e-7).all()
    with pytest.raises(ValueError, match="scope"):
        ReinitPlugin(scope="net")


def test_mean_abs_split_by_hand():
    useless, useful = mean_abs_split([torch.tensor([0.1, -0.9]), torch.tensor([0.0, 0.5, -0.2])], 0.4)
    assert useless == pytest.approx(0.05)  # the 2 smallest |gamma|: 0.0, 0.1
    assert useful == pytest.approx((0.9 + 0.5 + 0.2) / 3)


# --- consistency term that does not push the clean view -----------------------------------------


def test_consistency_loss_with_detached_clean_view_only_pulls_the_jittered_view():
    flipped = torch.tensor([[2.0, 0.0, -1.0]], requires_grad=True)
    jittered = torch.tensor([[0.0, 1.0, 0.0]], requires_grad=True)
    p, q = flipped.softmax(1).detach(), jittered.softmax(1).detach()
    by_hand = float((p * (p.log() - q.log())).sum())
    for detach in (False, True):
        flipped.grad = jittered.grad = None
        loss = consistency_loss(flipped, jittered, detach_clean=detach)
        assert float(loss) == pytest.approx(by_hand)
        loss.backward()
        assert (flipped.grad is None or not flipped.grad.any()) == detach
        assert jittered.grad.abs().sum() > 0


def test_aod_cr_detach_clean_changes_training_and_default_is_the_paper():
    bm = tiny_benchmark(parts=(1, 1))

    def train(**kw):
        model = tiny_model()
        n = sum(f.bn.weight.numel() for f in scaling_factors(model))
        start = 0
        with torch.no_grad():
            for f in scaling_factors(model):
                k = f.bn.weight.numel()
                f.bn.weight.copy_(torch.linspace(0.0, 1.5, n)[start:start + k])
                start += k
        s = AODStrategy(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), train_mb_size=16,
                        train_epochs=1, evaluator=make_evaluator(), valid_stream=bm.valid_stream, **kw)
        torch.manual_seed(0)
        s.train(bm.train_stream[1], eval_streams=[])
        return s.students[0].conv1.weight.detach().clone()

    paper, again, detached = train(), train(cr_detach_clean=False), train(cr_detach_clean=True)
    assert torch.equal(paper, again)
    assert not torch.equal(paper, detached)


# --- MSL learning rate, proximal SST, options through MultiStepSST -----------------------------


class PhaseLRs(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.seen = []

    def before_training_epoch(self, strategy, **kw):
        if strategy.clock.train_exp_epochs == 0:
            self.seen.append(strategy.optimizer.param_groups[0]["initial_lr"])


def test_lr_msl_sets_only_the_msl_phase_and_defaults_to_lr_sst():
    bm = tiny_benchmark()
    for lr_msl, expected in ((None, 0.1), (0.01, 0.01)):
        lrs = PhaseLRs()
        strategy = multi_step(bm, lr_msl=lr_msl, phase_plugins=[lrs])
        for exp in bm.train_stream[:2]:
            strategy.train(exp)
        # scratch, sst, aod, sst_msl
        assert lrs.seen == pytest.approx([0.1, 0.1, 0.001, expected])


def test_proximal_reaches_the_sst_plugin():
    strategy = multi_step(tiny_benchmark(), proximal=True)
    assert strategy.sst_args["proximal"] is True
    assert multi_step(tiny_benchmark()).sst_args["proximal"] is False


def test_reinit_range_scope_reaches_aod():
    bm = tiny_benchmark(parts=(1, 1))
    strategy = multi_step(bm, reinit_range_scope="layer", epochs_sst=1)
    for exp in bm.train_stream:
        strategy.train(exp)
    assert strategy.last_phase_strategy.reinit_range_scope == "layer"
    with pytest.raises(ValueError, match="reinit_range_scope"):
        multi_step(bm, reinit_range_scope="model")


# --- diagnostics ------------------------------------------------------------------------------------


def test_diagnostics_are_logged_per_step_and_do_not_change_the_run():
    bm = tiny_benchmark()

    def run(diagnostics):
        strategy = multi_step(bm, diagnostics=diagnostics)
        torch.manual_seed(0)
        for exp in bm.train_stream:
            strategy.train(exp)
        return strategy

    on, off = run(True), run(False)
    for k, v in on.model.state_dict().items():
        assert torch.equal(v, off.model.state_dict()[k]), k
    steps = {}
    for e in on.sst_events:
        if e.tag.startswith("diag/"):
            steps.setdefault(e.tag, []).append(e.step)
    assert steps["diag/result_valid_acc"] == [0, 1, 2]
    assert steps["diag/prepared_start_valid_acc"] == [1, 2]
    assert steps["diag/student1_reinit_valid_acc"] == steps["diag/student2_reinit_valid_acc"] == [1, 2]
    assert steps["diag/result_abs_gamma_useless"] == steps["diag/result_abs_gamma_useful"] == [0, 1, 2]
    assert steps["diag/prepared_abs_gamma_useless"] == [0, 1]  # nothing prepared after the last step
    assert steps["diag/teacher_updates"] == [1]  # the one SST + MSL phase
    assert not any(e.tag.startswith("diag/") for e in off.sst_events)
    updates = [e.value for e in on.sst_events if e.tag == "MSL/teacher_update"]
    assert [e.value for e in on.sst_events if e.tag == "diag/teacher_updates"] == [sum(updates)]


# --- learning rates must be positive -------------------------------------------------------------


@pytest.mark.parametrize("name", ["lr_scratch", "lr_sst", "lr_aod", "lr_msl"])
@pytest.mark.parametrize("value", [-0.1, 0.0])
def test_multi_step_rejects_non_positive_learning_rates_by_name(name, value):
    with pytest.raises(ValueError, match=name):
        MultiStepSST(model=tiny_model(), **{name: value})


def test_other_learning_rate_arguments_are_checked():
    with pytest.raises(ValueError, match="lrs"):
        StepwiseCosinePlugin(lrs=(0.1, -0.001))
    model = tiny_model()
    with pytest.raises(ValueError, match="lrs"):
        HPOStrategy(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), lrs=(0.01, -0.01))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.param_groups[0]["lr"] = -0.1  # torch checks only at construction
    with pytest.raises(ValueError, match="lr"):
        AODStrategy(model=model, optimizer=optimizer)
