"""Tests that kill mutation survivors of plugins/m2kd (docs/testing.md): the memory counts of the
paper's Table 2 by hand, the model's heads and messages, the plugin's arguments, its criterion by
hand, which experiences it accepts, the pruning schedule and the before/after-pruning readings, the
BatchNorm statistics recomputed on the step's data, what a snapshot keeps, the gradient masks of the
training and fine-tuning phases, and the state round trip.

The plugin's hooks are driven by hand on a three-conv model through a minimal strategy (the
callbacks Avalanche's SupervisedTemplate calls, in its order), so that each step takes a few
full-batch iterations and every reading can be recomputed independently."""

from __future__ import annotations

import copy
import io
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from avalanche.models import IncrementalClassifier
from avalanche.models.dynamic_modules import avalanche_model_adaptation

from avalanche_sst.benchmarks import class_incremental
from avalanche_sst.benchmarks.batched_fetch import batched_loader
from avalanche_sst.functional.ownership import FREE, OWNER_BUFFER
from avalanche_sst.metrics.cost import FORWARD_COST, CostMeter
from avalanche_sst.plugins import m2kd as m2kd_module
from avalanche_sst.plugins.m2kd import (
    M2KDModel,
    M2KDPlugin,
    exemplar_bytes,
    grow_incremental_classifier,
    m2kd_memory_bytes,
)

from conftest import make_images


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


# ------------------------------------------------------------------ a three-conv model, driven by hand
class Tiny(nn.Module):
    """conv1 (2x1x3x3 = 18 weights), layer1 (2x2x3x3 = 36), layer2 (3x2x3x3 = 54): 108 owned weights;
    BatchNorm of 2, 2 and 3 channels; the final Linear under ``head_attr``."""

    def __init__(self, head_attr: str = "fc"):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2)
        self.layer1 = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head_attr = head_attr
        setattr(self, head_attr, nn.Linear(3, 10))

    def forward(self, x):
        h = self.layer2(self.layer1(torch.relu(self.bn1(self.conv1(x)))))
        return getattr(self, self.head_attr)(self.pool(h))


SIZES = {"features.conv1": 18, "features.layer1.0": 36, "features.layer2.0": 54}
BN = ("features.bn1", "features.layer1.1", "features.layer2.1")


def _model(**kw) -> M2KDModel:
    torch.manual_seed(0)
    return M2KDModel(Tiny(), **kw)


def _bench(steps=2):
    train = make_images(12, seed=0, classes=2 * steps)
    return class_incremental(train, make_images(2, seed=1, classes=2 * steps), classes_per_step=2, seed=0,
                             augment=False)


def _strategy(model, exp, train_epochs=3, plugins=(), mb=64):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return SimpleNamespace(model=model, optimizer=opt, experience=exp, adapted_dataset=exp.dataset,
                           train_epochs=train_epochs, train_mb_size=mb, device=torch.device("cpu"),
                           plugins=list(plugins), clock=SimpleNamespace(train_iterations=0))


def _tensors(dataset):
    """The whole set as one batch, through the loader the strategy's data path uses (uint8 -> float)."""
    x, y, *_ = next(iter(batched_loader(dataset.eval(), len(dataset))))
    return x, y


def _iteration(plugin, s):
    """One full-batch training iteration in SupervisedTemplate's callback order."""
    x, y = _tensors(s.adapted_dataset)
    s.mb_x = x
    s.model.train()
    plugin.before_forward(s)
    loss = plugin(s.model(x), y)
    s.optimizer.zero_grad()
    loss.backward()
    plugin.before_update(s)
    s.optimizer.step()
    plugin.after_update(s)
    return loss


def _epoch(plugin, s, iterations=3):
    for _ in range(iterations):
        _iteration(plugin, s)
    plugin.after_training_epoch(s)


def _begin(plugin, s):
    avalanche_model_adaptation(s.model, s.experience)  # the heads grow as the strategy's adaptation does
    for p in s.plugins:
        p.before_training_exp(s)
    plugin.before_training_exp(s)


def _stats(model):
    return {k: v.clone() for k, v in model.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def _accuracy(model, dataset, refresh=True, mb=64):
    """The step's training-data accuracy in eval mode, on a copy (statistics recomputed when ``refresh``)."""
    model = copy.deepcopy(model)
    loader = batched_loader(dataset.eval(), mb)
    if refresh:
        update_bn(loader, model)
    model.eval()
    x, y = _tensors(dataset)
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _owners(plugin):
    return {n: getattr(m, OWNER_BUFFER).clone() for n, m in plugin._layers()}


# ------------------------------------------------------------------ the model
def test_model_heads_start_at_initial_classes_and_find_the_backbones_final_linear():
    default = _model()
    assert default.head.classifier.out_features == 2 and default.aux_head[2].classifier.out_features == 2
    three = _model(initial_classes=3)
    assert three.head.classifier.out_features == 3 and three.aux_head[2].classifier.out_features == 3
    named = M2KDModel(Tiny(head_attr="classifier"))  # torchvision's VGG/MobileNet spelling
    assert isinstance(named.features.classifier, nn.Identity) and named.head.classifier.in_features == 3
    with pytest.raises(ValueError, match=r"^M2KD needs the backbone's final Linear as an `fc` or `classifier` "
                                         r"attribute; Tiny has neither$"):
        M2KDModel(Tiny(head_attr="last"))
    with pytest.raises(ValueError, match=r"^M2KD's auxiliary head \(aux_stage\) needs residual stage 3 of Tiny, "):
        M2KDModel(Tiny(), aux_stage=3)
    with pytest.raises(RuntimeError, match=r"^aux_logits\(\) needs a forward pass first$"):
        default.aux_logits()
    with pytest.raises(ValueError, match=r"^this M2KDModel has no auxiliary head \(aux_stage=None\); use lam=0$"):
        _model(aux_stage=None).aux_logits()


# ------------------------------------------------------------------ the plugin's arguments
def test_plugin_defaults_are_the_papers_and_bad_arguments_name_the_fix():
    p = M2KDPlugin()
    assert (p.prune_ratio, p.alpha, p.lam, p.finetune_epochs) == (0.75, 0.5, 1.0, 15)
    assert (p.weight_decay_first, p.weight_decay_after, p.teachers) == (1e-5, 0.0, "all")
    assert p.exact_freeze is True and p.recompute_bn is True and p.log_prune_accuracy is True
    assert M2KDPlugin(prune_ratio=0.0, finetune_epochs=3).finetune_epochs == 0  # no pruning: no fine-tuning
    assert M2KDPlugin(alpha=0.0, lam=0.0).alpha == 0.0  # 0 is allowed for both
    for kw in ({"alpha": -0.1}, {"lam": -0.1}):
        with pytest.raises(ValueError, match=r"^alpha and lam must be >= 0, got alpha="):
            M2KDPlugin(**kw)
    with pytest.raises(ValueError, match=r"^finetune_epochs must be >= 0, got -1$"):
        M2KDPlugin(finetune_epochs=-1)
    with pytest.raises(ValueError, match=r"^teachers must be 'all' \(M2KD\) or 'last' \(LwF-MC\), got 'some'$"):
        M2KDPlugin(teachers="some")
    with pytest.raises(TypeError, match=r"^M2KDPlugin needs an M2KDModel \(wrap the backbone: M2KDModel\(backbone\)\), "
                                        r"got Linear$"):
        M2KDPlugin(network=nn.Linear(2, 2))
    no_aux = _model(aux_stage=None)
    with pytest.raises(ValueError, match=r"^lam > 0 needs the auxiliary head: build M2KDModel\(backbone, aux_stage=2\) "
                                         r"or set lam=0$"):
        M2KDPlugin(network=no_aux, lam=0.5)
    assert M2KDPlugin(network=no_aux, lam=0.0).network is no_aux


# ------------------------------------------------------------------ the criterion
def _bce(logit, target):
    """Sigmoid BCE of one unit, by hand."""
    return math.log1p(math.exp(-logit)) if target else math.log1p(math.exp(logit))


def test_criterion_is_the_plain_bce_outside_training_iterations():
    model = _model()
    p = M2KDPlugin(network=model, finetune_epochs=1)
    logits, targets = torch.tensor([[2.0, -1.0, 0.0]]), torch.tensor([0])
    # over all three units, although label 2 is absent from the targets
    hand = (_bce(2.0, 1) + _bce(-1.0, 0) + _bce(0.0, 0)) / 3
    model.train()  # a fresh plugin (no step begun) is the plain BCE even with the model in train mode
    assert p(logits, targets).item() == pytest.approx(hand, rel=1e-6)
    bench = _bench(1)
    s = _strategy(model, bench.train_stream[0])
    _begin(p, s)
    model.eval()  # an evaluation inside the step (eval_every) reads the plain BCE, no distillation
    assert p(logits, targets).item() == pytest.approx(hand, rel=1e-6)


def test_training_loss_is_mmd_plus_lam_times_alpha_weighted_ad_by_hand():
    model = _model()
    p = M2KDPlugin(network=model, lam=0.5, alpha=0.25, finetune_epochs=1)
    s = _strategy(model, _bench(1).train_stream[0])
    _begin(p, s)
    with torch.no_grad():  # every logit 0: each unit's BCE is log 2
        for head in (model.head.classifier, model.aux_head[2].classifier):
            head.weight.zero_()
            head.bias.zero_()
    x, y = _tensors(s.adapted_dataset)
    model.train()
    # step 1, no teacher: L_MMD = log 2; L_AD = alpha * label BCE = 0.25 log 2; total = L_MMD + 0.5 L_AD
    assert p(model(x), y).item() == pytest.approx(math.log(2) * (1 + 0.5 * 0.25), rel=1e-6)


# ------------------------------------------------------------------ which experiences are accepted
def _exp(classes, k=0, **attrs):
    return SimpleNamespace(classes_in_this_experience=classes, current_experience=k, **attrs)


def test_experiences_must_be_class_incremental_with_contiguous_new_labels():
    p = M2KDPlugin(network=_model())
    accept = [
        _exp([0, 1]),  # no origin stream, no task labels: task label 0 assumed
        _exp([0, 1], origin_stream=SimpleNamespace()),  # a stream without a benchmark
        _exp([0, 1], origin_stream=SimpleNamespace(benchmark=SimpleNamespace()), task_labels=[0]),
        _exp([0, 1], origin_stream=SimpleNamespace(benchmark=SimpleNamespace(setting="class_incremental"))),
    ]
    for exp in accept:
        assert p._check_experience(SimpleNamespace(experience=exp)) == 2
    first = r"^M2KD runs in the class-incremental setting \(disjoint class groups, task label 0\); "
    task_il = SimpleNamespace(benchmark=SimpleNamespace(setting="task_incremental"))
    refuse = [
        (_exp([0, 1], 3, origin_stream=task_il), first + r"experience 3 has setting 'task_incremental', task labels "
                                                         r"\[0\] and classes \[0, 1\] while 0 units are already seen"),
        (_exp([0, 1], task_labels=[1]), first + r"experience 0 has setting 'class_incremental', task labels \[1\] "),
        (_exp(list(range(12)), task_labels=[2]), first + r".*and classes \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\] while 0 "),
        (_exp([]), first + r".*and classes \[\] while 0 units"),
    ]
    seen = M2KDPlugin(network=_model())
    seen.boundaries = [2]
    for exp, message in refuse:
        with pytest.raises(ValueError, match=message):
            p._check_experience(SimpleNamespace(experience=exp))
    # classes overlapping the seen ones are not class-incremental (first message, not the contiguity one)
    with pytest.raises(ValueError, match=first + r"experience 0 has .* classes \[1, 2\] while 2 units are already "
                                                 r"seen: build the benchmark with avalanche_sst.benchmarks.scenarios"
                                                 r".class_incremental$"):
        seen._check_experience(SimpleNamespace(experience=_exp([1, 2])))
    assert seen._check_experience(SimpleNamespace(experience=_exp([2, 3]))) == 4
    gap = list(range(2, 13)) + [14]
    with pytest.raises(ValueError, match=r"^M2KD needs contiguous labels per experience \(experience k after those "
                                         r"of k-1\), got \[2, 3, 4, 5, 6, 7, 8, 9, 10, 11\] after 2 seen units: "
                                         r"relabel by the class order \(scenarios.class_incremental does\)$"):
        seen._check_experience(SimpleNamespace(experience=_exp(gap)))


def test_an_experience_without_a_class_list_gets_the_setting_error_not_an_attribute_error():
    """A same-class experience (avalanche_sst.benchmarks.same_class) lists no classes: M2KD must name the setting."""
    same_class = SimpleNamespace(benchmark=SimpleNamespace(setting="same_class"))
    exp = SimpleNamespace(current_experience=1, origin_stream=same_class)
    with pytest.raises(ValueError, match=r"^M2KD runs in the class-incremental setting .* experience 1 has setting "
                                         r"'same_class', task labels \[0\] and classes \[\] while 0 units"):
        M2KDPlugin(network=_model())._check_experience(SimpleNamespace(experience=exp))


def test_a_step_takes_the_strategys_model_and_its_weight_decay():
    bench = _bench(2)
    p = M2KDPlugin(weight_decay_first=0.01, weight_decay_after=0.002, finetune_epochs=1)
    model = _model()
    s = _strategy(model, bench.train_stream[0])
    s.optimizer.add_param_group({"params": [nn.Parameter(torch.zeros(1))], "weight_decay": 0.5})
    _begin(p, s)
    assert p.network is model and p._units == 2
    assert [g["weight_decay"] for g in s.optimizer.param_groups] == [0.01, 0.01]  # step 1: every group
    p.boundaries = [2]
    s.experience = bench.train_stream[1]
    _begin(p, s)
    assert [g["weight_decay"] for g in s.optimizer.param_groups] == [0.002, 0.002] and p._units == 4
    with pytest.raises(TypeError, match="needs an M2KDModel"):
        M2KDPlugin().before_training_exp(_strategy(Tiny(), bench.train_stream[0]))
    with pytest.raises(ValueError, match="lam > 0 needs the auxiliary head"):
        M2KDPlugin(lam=0.5).before_training_exp(_strategy(_model(aux_stage=None), bench.train_stream[0]))


# ------------------------------------------------------------------ pruning schedule, readings, statistics
def test_one_step_prunes_at_the_prune_point_and_reads_before_and_after_pruning():
    bench = _bench(2)
    model, meter = _model(), CostMeter()
    p = M2KDPlugin(network=model, prune_ratio=0.5, finetune_epochs=1)
    s = _strategy(model, bench.train_stream[0], train_epochs=3, plugins=[meter])
    data = s.adapted_dataset  # 24 images of classes 0 and 1
    _begin(p, s)
    assert p.extra_passes_per_sample(s) == 0  # step 1 has no teacher
    _epoch(p, s)
    assert p.phase == "train" and all(bool((o == FREE).all()) for o in _owners(p).values())  # epoch 1 of 3
    for _ in range(3):
        _iteration(p, s)
    stats = _stats(model)
    before, stale_before = _accuracy(model, data), _accuracy(model, data, refresh=False)
    p.after_training_epoch(s)  # epoch 2 = 3 - 1: the prune point
    owners = _owners(p)
    for name, n in SIZES.items():  # r = 0.5: keep n - round(n / 2) of the free weights, id 0
        assert int((owners[name] == 0).sum()) == n - round(0.5 * n)
        assert int((owners[name] == FREE).sum()) == round(0.5 * n)
        weight = dict(p._layers())[name].weight
        assert bool((weight[owners[name] == FREE] == 0).all()) and bool((weight[owners[name] == 0] != 0).all())
    assert p.phase == "finetune" and not s.optimizer.state
    now = _stats(model)  # the readings recomputed statistics and put the running ones back
    assert all(torch.equal(now[k], stats[k]) for k in stats)
    after, stale_after = _accuracy(model, data), _accuracy(model, data, refresh=False)
    assert (before, after) != (stale_before, stale_after)  # the recomputation changes what is read
    assert p.prune_log == [] and meter.current == 0.0
    for _ in range(3):
        _iteration(p, s)
    final = copy.deepcopy(model)
    update_bn(batched_loader(data.eval(), s.train_mb_size), final)
    p.after_training_epoch(s)  # the last epoch closes the step: statistics of the final weights
    now = _stats(model)
    assert all(torch.equal(now[k], v) for k, v in _stats(final).items())
    end = _accuracy(model, data, refresh=False)
    log = [{"step": 1.0, "before_prune": before, "after_prune": after, "end_of_step": end}]
    assert p.prune_log == log
    assert [(e.tag, e.value) for e in s.sst_events] == [
        ("M2KD/train_acc_before_prune", before), ("M2KD/train_acc_after_prune", after),
        ("M2KD/train_acc_end_of_step", end)]
    # the statistics pass is training cost: one forward (1/3 of a pass) per training image, once
    assert meter._current == {"train": FORWARD_COST * 24, "teacher": 0.0, "valid": 0.0, "importance": 0.0}
    p.after_training_exp(s)
    assert p.prune_log == log and len(s.sst_events) == 3 and meter.current == FORWARD_COST * 24
    # snapshot 0 keeps BatchNorm, heads and biases, not the owned weights (rebuilt from the ids) nor the ids
    snap = p.snapshots[0]
    assert not any(k.endswith(OWNER_BUFFER) for k in snap) and not any(f"{n}.weight" in snap for n in SIZES)
    state = model.state_dict()
    owned = {f"{n}.weight" for n in SIZES}
    kept = {k for k in state if not k.endswith(OWNER_BUFFER) and k not in owned}
    assert set(snap) == kept and all(torch.equal(snap[k], state[k]) for k in kept)
    # between steps the plugin runs no teacher (an evaluation costs one forward)
    assert p.phase is None and p.extra_passes_per_sample(s) == 0
    s.mb_x = _tensors(data)[0]
    p.before_forward(s)
    assert not p._teacher_scores
    # Table 2's memory by hand: 108 ids of 1 byte + the snapshot's float32 BatchNorm (2 + 2 + 3 channels x 4
    # tensors x 4 bytes), three int64 counters, and two heads of 3 x 2 + 2 floats plus 2 int8 active units
    assert p.memory_bytes() == 108 + (7 * 4 * 4 + 3 * 8) + 2 * ((3 * 2 + 2) * 4 + 2)


def test_fine_tuning_trains_only_the_steps_kept_weights_and_the_next_step_pays_its_teachers():
    bench = _bench(3)
    model = _model()
    p = M2KDPlugin(network=model, prune_ratio=0.5, finetune_epochs=1, exact_freeze=False, log_prune_accuracy=False)
    s = _strategy(model, bench.train_stream[0], train_epochs=2)
    for k in range(3):
        s.experience = bench.train_stream[k]
        s.adapted_dataset = s.experience.dataset
        _begin(p, s)
        assert p.extra_passes_per_sample(s) == pytest.approx(FORWARD_COST * k)  # one forward per snapshot
        if k == 1:
            _iteration(p, s)  # training phase: step 0's weights get no gradient, all free ones may
            for name, m in p._layers():
                owner, grad = getattr(m, OWNER_BUFFER), m.weight.grad
                assert bool((grad[owner == 0] == 0).all()) and bool((grad[owner == FREE] != 0).any()), name
        _epoch(p, s, iterations=1)
        assert p.phase == "finetune"
        _iteration(p, s)
        if k == 1:  # fine-tuning: only the weights this step kept (id 1) get a gradient
            for name, m in p._layers():
                owner, grad = getattr(m, OWNER_BUFFER), m.weight.grad
                assert bool((grad[owner == 0] == 0).all()) and bool((grad[owner == FREE] == 0).all()), name
                assert bool((grad[owner == 1] != 0).any()), name
        p.after_training_epoch(s)
        p.after_training_exp(s)
    assert p.boundaries == [2, 4, 6] and p.prune_log == []


def test_early_stop_prunes_and_reads_when_the_step_ends_before_the_prune_point():
    bench = _bench(1)
    model = _model()
    p = M2KDPlugin(network=model, prune_ratio=0.5, finetune_epochs=2)
    s = _strategy(model, bench.train_stream[0], train_epochs=4)
    _begin(p, s)
    _epoch(p, s)  # epoch 1 of 4, prune point 2: then an early stop
    p.after_training_exp(s)
    assert int((_owners(p)["features.conv1"] == 0).sum()) == 9
    assert list(p.prune_log[0]) == ["step", "before_prune", "after_prune", "end_of_step"]
    assert p.phase is None and len(p.snapshots) == 1


def test_without_recompute_bn_the_end_reading_refreshes_a_copy_of_the_statistics():
    bench = _bench(1)
    model, meter = _model(), CostMeter()
    p = M2KDPlugin(network=model, prune_ratio=0.5, finetune_epochs=1, recompute_bn=False)
    s = _strategy(model, bench.train_stream[0], train_epochs=2, plugins=[meter])
    _begin(p, s)
    _epoch(p, s)
    for _ in range(3):
        _iteration(p, s)
    stats = _stats(model)
    end, stale = _accuracy(model, s.adapted_dataset), _accuracy(model, s.adapted_dataset, refresh=False)
    assert end != stale
    p.after_training_epoch(s)
    now = _stats(model)
    assert all(torch.equal(now[k], stats[k]) for k in stats)  # the running statistics are left as trained
    assert p.prune_log[0]["end_of_step"] == end and meter.current == 0.0  # no statistics pass to pay


def test_without_prune_logging_nothing_is_read_or_logged():
    model = _model()
    p = M2KDPlugin(network=model, prune_ratio=0.5, finetune_epochs=1, log_prune_accuracy=False)
    s = _strategy(model, _bench(1).train_stream[0], train_epochs=2)
    _begin(p, s)
    _epoch(p, s, iterations=1)
    _epoch(p, s, iterations=1)
    p.after_training_exp(s)
    assert p.prune_log == [] and not hasattr(s, "sst_events")


def test_statistics_are_recomputed_on_the_data_the_step_trains_on():
    bench = _bench(2)
    extra = bench.train_stream[1].dataset
    for adapted in (True, False):
        model = _model()
        p = M2KDPlugin(network=model, prune_ratio=0.0, lam=0.0, log_prune_accuracy=False)
        s = _strategy(model, bench.train_stream[0], train_epochs=1)
        own = s.experience.dataset
        if adapted:  # e.g. iCaRL's exemplars joined to the step's data
            s.adapted_dataset = own.concat(extra)
        else:
            del s.adapted_dataset
        _begin(p, s)
        refs = {}
        for name, data in (("adapted", own.concat(extra)), ("own", own)):
            ref = copy.deepcopy(model)
            update_bn(batched_loader(data.eval(), s.train_mb_size), ref)
            refs[name] = ref.features.bn1.running_mean
        p.after_training_epoch(s)
        assert not torch.equal(refs["adapted"], refs["own"])
        assert torch.equal(model.features.bn1.running_mean, refs["adapted" if adapted else "own"])


# ------------------------------------------------------------------ state
def test_state_round_trip_keeps_the_prune_log_and_head_dtypes():
    bench = _bench(2)
    model = _model()
    p = M2KDPlugin(network=model, prune_ratio=0.5, finetune_epochs=1, teachers="last")
    s = _strategy(model, bench.train_stream[0], train_epochs=2)
    for k in range(2):
        s.experience = bench.train_stream[k]
        s.adapted_dataset = s.experience.dataset
        _begin(p, s)
        _epoch(p, s, iterations=1)
        _epoch(p, s, iterations=1)
        p.after_training_exp(s)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "m2kd": p.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    fresh_model = _model()
    fresh = M2KDPlugin(network=fresh_model, prune_ratio=0.5, finetune_epochs=1, teachers="last")
    fresh.rebuild_model(saved["m2kd"])
    fresh_model.load_state_dict(saved["model"])
    fresh.load_state_dict(saved["m2kd"])
    assert fresh.prune_log == p.prune_log and len(p.prune_log) == 2
    assert fresh.extra_passes_per_sample(None) == 0  # a resumed plugin runs no teacher before its next step
    # the grown heads are what Avalanche's own growth makes: int8 active units on the weights' device
    state, restored = model.state_dict(), fresh_model.state_dict()
    assert all(restored[k].dtype == v.dtype and torch.equal(restored[k], v) for k, v in state.items())
    assert fresh_model.head.active_units.dtype == torch.int8
    # checkpoints written before the prune log and head widths were saved still load
    older = M2KDPlugin(network=_model(), prune_ratio=0.5)
    older.rebuild_model({})
    older.load_state_dict({"snapshots": [], "boundaries": []})
    assert older.prune_log == [] and older.snapshots == []
    with pytest.raises(ValueError, match=r"^snapshot 0 was not kept \(teachers='last' keeps only the latest\)$"):
        fresh.snapshot_forward(0, _tensors(s.adapted_dataset)[0])


def test_memory_without_pruning_is_whole_snapshots_and_no_ids():
    model = _model()
    p = M2KDPlugin(network=model, prune_ratio=0.0, log_prune_accuracy=False)
    s = _strategy(model, _bench(1).train_stream[0], train_epochs=1)
    _begin(p, s)
    _epoch(p, s, iterations=1)
    p.after_training_exp(s)
    # the 108 conv weights are stored as float32 in the snapshot, no owner id is counted
    assert p.memory_bytes() == 108 * 4 + (7 * 4 * 4 + 3 * 8) + 2 * ((3 * 2 + 2) * 4 + 2)


# ------------------------------------------------------------------ devices (meta stands in for an accelerator)
def test_grown_heads_and_the_statistics_pass_stay_on_the_models_device(monkeypatch):
    head = IncrementalClassifier(3, 2).to("meta")
    grow_incremental_classifier(head, 4)
    assert head.classifier.weight.device.type == "meta" and head.classifier.out_features == 4
    assert head.active_units.device.type == "meta" and head.active_units.dtype == torch.int8
    seen = []
    monkeypatch.setattr(m2kd_module, "update_bn", lambda loader, model, device=None: seen.append(device))
    p = M2KDPlugin(network=_model())
    p._refresh_bn(SimpleNamespace(device=torch.device("meta")), [])
    assert seen == [torch.device("meta")]  # the batches are moved where the model is
