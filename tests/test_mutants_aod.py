"""Tests that kill mutation survivors of strategies/aod (docs/testing.md): the paper's defaults and the
constructor's messages, the two views of eq. 5 by hand (B_F flipped along the width, B_C jittered in
pixel space on the experience's normalisation, on the batch's device and dtype), the criterion of
eq. 5-8 with every switch against ``aod_losses``, the detached consistency option's gradients, the
pair's evaluation outside training, and one training run read end to end: each student's eq. 4
re-initialisation from the seed's draw, the epoch averages logged, the student chosen on the
validation slice (a tie keeps student 1) and the per-student evaluation scalars."""

from __future__ import annotations

import copy
import re
import warnings
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from avalanche.core import SupervisedPlugin

from avalanche_sst.benchmarks.tensor_data import color_jitter
from avalanche_sst.functional.losses import aod_losses, kl_divergence
from avalanche_sst.functional.sparsity import DEFAULT_TARGET_RATIO
from avalanche_sst.metrics import make_evaluator
from avalanche_sst.metrics.validation import accuracy
from avalanche_sst.plugins.reinit import diverse_reinit_
from avalanche_sst.strategies.aod import AODStrategy, StudentPair, _normalization_of, consistency_loss

from conftest import spread_gamma_resnet8, two_same_class_parts

torch.set_num_threads(1)


_model = spread_gamma_resnet8


@pytest.fixture(scope="module")
def bm():
    return two_same_class_parts()


def _aod(model=None, lr=0.05, **kw) -> AODStrategy:
    model = model if model is not None else _model()
    args = dict(train_mb_size=32, train_epochs=1, eval_mb_size=64, evaluator=make_evaluator())
    args.update(kw)
    return AODStrategy(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr), **args)


def _events(strategy, prefix: str) -> list:
    return [(e.tag, e.value, e.step) for e in getattr(strategy, "sst_events", []) if e.tag.startswith(prefix)]


# --- defaults and messages ----------------------------------------------------------------------


def test_defaults_are_the_papers_and_nothing_is_trained_yet():
    s = _aod()
    assert (s.alpha, s.margins, s.target_ratio, s.jitter, s.seed) == (0.5, (0.1, 0.2), DEFAULT_TARGET_RATIO,
                                                                       (0.4, 0.4, 0.4), 0)
    flags = (s.reinit, s.adaptive, s.use_kd, s.use_cr, s.eval_students, s.cr_detach_clean, s.log_reinit_accuracy)
    assert all(a is b for a, b in zip(flags, (True, True, True, True, True, False, False)))
    assert s.reinit_range_scope == "global" and s.valid_stream is None
    assert (s.students, s.chosen, s.valid_accuracies, s.loss_terms) == ([], None, [], {})
    assert type(s._criterion) is nn.CrossEntropyLoss and s.training_passes_per_sample() == 1.0
    given = nn.CrossEntropyLoss(label_smoothing=0.1)
    assert _aod(criterion=given)._criterion is given
    s = _aod(brightness=0.3, contrast=0.2, saturation=0.5, seed=4, eval_students=False, alpha=0.0)
    assert s.jitter == (0.3, 0.2, 0.5) and s.seed == 4 and s.eval_students is False and s.alpha == 0.0


def test_consistency_loss_pulls_both_views_by_default():
    flipped = torch.tensor([[1.0, -0.5, 0.2]], requires_grad=True)
    jittered = torch.tensor([[0.3, 0.4, -1.0]], requires_grad=True)
    loss = consistency_loss(flipped, jittered)
    assert float(loss) == pytest.approx(float(kl_divergence(flipped, jittered)))
    loss.backward()
    assert flipped.grad.abs().sum() > 0 and jittered.grad.abs().sum() > 0


class _NoLearningRate(torch.optim.Optimizer):
    """An optimizer whose parameter group has no ``lr`` (the check reads it with a default)."""

    def __init__(self, params):
        super().__init__(params, {})


def test_constructor_messages_are_exact_and_boundaries_are_allowed():
    model = _model()
    cases = [
        (dict(alpha=-0.1), r"alpha must be >= 0, got -0.1 (paper: 0.5)"),
        (dict(reinit_range_scope="model"),
         "reinit_range_scope must be one of ('global', 'layer') (paper: 'global'), got 'model'"),
        (dict(margins=(0.1,)), "margins needs one re-init margin per student, got (0.1,) (paper: (0.1, 0.2))"),
        (dict(target_ratio=1.0), f"target_ratio must be a number in the open interval (0, 1) (paper default "
                                 f"{DEFAULT_TARGET_RATIO}), got 1.0"),
    ]
    for kw, message in cases:
        with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
            _aod(model, **kw)
    refused = torch.optim.SGD(model.parameters(), lr=0.1)
    refused.param_groups[0]["lr"] = -1.0  # torch refuses it at construction, not afterwards
    with pytest.raises(ValueError, match=r"^optimizer lr must be >= 0, got -1\.0$"):
        AODStrategy(model=model, optimizer=refused)
    flat = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(3))
    with pytest.raises(ValueError, match=r"^AODStrategy needs a model with BatchNorm2d layers"):
        AODStrategy(model=flat, optimizer=torch.optim.SGD(flat.parameters(), lr=0.1))
    assert _aod(model, alpha=0.0, lr=0.0).alpha == 0.0  # both bounds are allowed
    assert AODStrategy(model=model, optimizer=_NoLearningRate(model.parameters())).alpha == 0.5
    bn = [p for n, p in model.named_parameters() if "bn" in n]
    rest = [p for n, p in model.named_parameters() if "bn" not in n]
    s = AODStrategy(model=model, optimizer=torch.optim.SGD([{"params": bn}, {"params": rest}], lr=0.1))
    with pytest.raises(ValueError, match=r"^AODStrategy needs an optimizer with one parameter group, got 2; "
                                         r"build it as SGD\(model\.parameters\(\), \.\.\.\)$"):
        s.make_optimizer()


def test_normalization_is_read_from_the_datasets_collate(bm):
    collate = bm.train_stream[1].dataset.collate_fn
    assert _normalization_of(bm.train_stream[1].dataset) == (collate.mean, collate.std)
    assert _normalization_of(object()) == (None, None)
    assert _normalization_of(SimpleNamespace(collate_fn=object())) == (None, None)
    assert _normalization_of(SimpleNamespace(collate_fn=SimpleNamespace(mean=[0.5]))) == ([0.5], None)
    assert _normalization_of(SimpleNamespace(collate_fn=SimpleNamespace(std=[0.2]))) == (None, [0.2])


# --- the two views (eq. 5) -------------------------------------------------------------------------


MEAN, STD, JITTER = (0.2, 0.5, 0.7), (0.3, 0.25, 0.1), (0.3, 0.2, 0.5)


def _views_by_hand(x, seed):
    m = torch.tensor(MEAN, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(STD, dtype=x.dtype).view(1, 3, 1, 1)
    torch.manual_seed(seed)
    jittered = color_jitter((x * s + m).clamp(0, 1), *JITTER)
    return x.flip(3), (jittered - m) / s


def test_views_flip_the_width_and_jitter_in_pixel_space_per_dtype():
    s = _aod(brightness=JITTER[0], contrast=JITTER[1], saturation=JITTER[2])
    s._norm = (list(MEAN), list(STD))
    x32 = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0)) * 2  # pixels outside [0, 1] too
    for x in (x32, x32.double()):  # float32 first: the float64 batch must not reuse float32 statistics
        torch.manual_seed(11)
        got = s._views(x)
        expected = _views_by_hand(x, 11)
        assert all(g.dtype == x.dtype and torch.equal(g, e) for g, e in zip(got, expected))
    raw = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(1)) * 2 - 0.5
    s._norm = (None, None)  # no normalisation: the jitter sees the clamped pixels themselves
    torch.manual_seed(12)
    flipped, jittered = s._views(raw)
    torch.manual_seed(12)
    assert torch.equal(flipped, raw.flip(3)) and torch.equal(jittered, color_jitter(raw.clamp(0, 1), *JITTER))
    # without brightness (which clamps too) the contrast sees the clamped pixels' mean
    s.jitter = (0.0, 0.2, 0.5)
    for norm, x in (((None, None), raw), ((list(MEAN), list(STD)), x32)):
        s._norm, s._norm_tensors = norm, {}
        torch.manual_seed(13)
        _, jittered = s._views(x)
        m, sd = (0.0, 1.0) if norm[0] is None else (torch.tensor(MEAN).view(1, 3, 1, 1),
                                                    torch.tensor(STD).view(1, 3, 1, 1))
        assert (x * sd + m).min() < 0 and (x * sd + m).max() > 1
        torch.manual_seed(13)
        expected = color_jitter((x * sd + m).clamp(0, 1), 0.0, 0.2, 0.5)
        assert torch.equal(jittered, expected if norm[0] is None else (expected - m) / sd)


def test_views_are_made_on_the_batchs_device():
    s = _aod()
    s._norm = (list(MEAN), list(STD))
    flipped, jittered = s._views(torch.zeros(2, 3, 4, 5, device="meta"))  # a CPU statistic would refuse it
    assert flipped.device.type == jittered.device.type == "meta" and jittered.shape == (2, 3, 4, 5)


# --- the criterion (eq. 5-8) -------------------------------------------------------------------------


def _in_training(s: AODStrategy, batch: int = 4, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = [tuple(torch.randn(batch, classes, generator=g).requires_grad_() for _ in range(2)) for _ in range(2)]
    s.model = StudentPair(_model(), _model())
    s.is_training = True
    s.mbatch = [torch.zeros(batch, 1, 8, 8), torch.tensor([0, 2, 1, 2]), torch.zeros(batch, dtype=torch.long)]
    s._logits = logits
    return logits


@pytest.mark.parametrize("adaptive,use_kd,use_cr", [(True, True, True), (False, True, True), (True, False, True),
                                                     (True, True, False), (False, False, False)])
def test_criterion_is_eq_5_to_8_with_the_strategys_switches(adaptive, use_kd, use_cr):
    s = _aod(alpha=0.3, adaptive=adaptive, use_kd=use_kd, use_cr=use_cr)
    (l1f, l1c), (l2f, l2c) = _in_training(s)
    total = s.criterion()
    out = aod_losses(l1f, l1c, l2f, l2c, s.mb_y, alpha=0.3, adaptive=adaptive, use_kd=use_kd, use_cr=use_cr)
    assert torch.equal(total, out.total_1 + out.total_2)
    assert s.loss_terms.keys() == {"ce_1", "ce_2", "kd_1", "kd_2", "cr_1", "cr_2", "w_1", "w_2"}
    assert all(torch.equal(v, getattr(out, k)) for k, v in s.loss_terms.items())


def test_detached_consistency_pulls_only_the_jittered_views():
    s = _aod(alpha=0.3, cr_detach_clean=True)
    logits = _in_training(s)
    s.criterion().backward()
    hand = [tuple(t.detach().clone().requires_grad_() for t in pair) for pair in logits]
    (h1f, h1c), (h2f, h2c) = hand
    out = aod_losses(h1f, h1c, h2f, h2c, s.mb_y, alpha=0.3, use_cr=False)
    cr_1, cr_2 = kl_divergence(h1f.detach(), h1c), kl_divergence(h2f.detach(), h2c)
    (out.total_1 + 0.3 * cr_1 + out.total_2 + 0.3 * cr_2).backward()
    for got, expected in zip((t for pair in logits for t in pair), (t for pair in hand for t in pair)):
        torch.testing.assert_close(got.grad, expected.grad, rtol=1e-6, atol=1e-7)
    assert float(s.loss_terms["cr_1"]) == pytest.approx(float(cr_1)) and float(cr_1) > 0


class _LastEvalBatch(SupervisedPlugin):
    def after_eval_iteration(self, strategy, **kwargs):
        self.x, self.y, self.output, self.loss = strategy.mb_x, strategy.mb_y, strategy.mb_output, strategy.loss


def test_outside_training_the_pair_predicts_with_student_1_on_the_unflipped_images(bm):
    last = _LastEvalBatch()
    s = _aod(eval_mb_size=100, plugins=[last])
    first, second = _model(1), _model(2)
    s.model = StudentPair(first, second)
    s.eval(bm.test_stream[0])  # 30 images: one batch
    first.eval()
    with torch.no_grad():
        expected = first(last.x)
    assert len(last.x) == 30 and torch.equal(last.output, expected)
    assert float(last.loss) == pytest.approx(float(F.cross_entropy(expected, last.y)), rel=1e-6)
    in_order = last.y.clone()
    torch.manual_seed(0)
    s.eval(bm.test_stream[0], shuffle=True)  # Avalanche's eval arguments reach its data loader
    assert sorted(last.y.tolist()) == sorted(in_order.tolist()) and not torch.equal(last.y, in_order)


# --- one training run, read end to end ------------------------------------------------------------


class _Reader(SupervisedPlugin):
    """The students as training starts, and what each iteration computed."""

    def __init__(self):
        super().__init__()
        self.start, self.norm, self.passes, self.terms, self.outputs_are_student_1 = None, None, [], [], []

    def before_training_epoch(self, strategy, **kwargs):
        if self.start is None:
            self.start = [copy.deepcopy(m) for m in strategy.model.students]
            self.norm = strategy._norm
        self.terms.append([])

    def after_training_iteration(self, strategy, **kwargs):
        self.passes.append(strategy.training_passes_per_sample())
        self.terms[-1].append({k: float(v) for k, v in strategy.loss_terms.items()})
        self.outputs_are_student_1.append(torch.equal(strategy.mb_output, strategy._logits[0][0]))


@pytest.fixture  # per test: mutmut runs only the tests it saw call the mutated function (the fixture's first)
def trained(bm):
    base = _model()
    reader = _Reader()
    s = _aod(copy.deepcopy(base), train_epochs=2, seed=3, reinit_range_scope="layer", log_reinit_accuracy=True,
             valid_stream=bm.valid_stream, plugins=[reader])
    torch.manual_seed(0)
    s.train(bm.train_stream[1], eval_streams=[])
    return SimpleNamespace(s=s, base=base, reader=reader)


def test_each_student_starts_from_eq_4_drawn_from_the_seed_and_the_experience(trained):
    generator = torch.Generator().manual_seed(3 * 1000 + 1)
    for margin, start in zip((0.1, 0.2), trained.reader.start):
        expected = copy.deepcopy(trained.base)
        diverse_reinit_(expected, DEFAULT_TARGET_RATIO, margin, generator, "layer")
        got = start.state_dict()
        assert all(torch.equal(got[k], v) for k, v in expected.state_dict().items())


def test_training_reads_the_experiences_normalisation_and_costs_four_passes(trained, bm):
    collate = bm.train_stream[1].dataset.collate_fn
    assert trained.reader.norm == (collate.mean, collate.std) and collate.mean is not None
    assert trained.reader.passes == [4.0] * 4 and trained.s.training_passes_per_sample() == 1.0
    assert all(trained.reader.outputs_are_student_1)  # Avalanche's training accuracy: student 1 on B_F


def test_logged_loss_terms_are_the_epoch_means(trained):
    names = {"ce": "L_CE", "kd": "L_KD", "cr": "L_CR", "w": "W_KD"}
    logged = _events(trained.s, "AOD/")
    for epoch, iterations in enumerate(trained.reader.terms):
        assert len(iterations) == 2  # 45 images in batches of 32
        for key in iterations[0]:
            term, k = key.split("_")
            values = [v for tag, v, _ in logged if tag == f"AOD/{names[term]}/student{k}"]
            mean = sum(it[key] for it in iterations) / 2
            assert values[epoch] == pytest.approx(mean, rel=1e-12, abs=1e-15)


def test_the_student_is_chosen_on_the_validation_slice_and_logged(trained, bm):
    s, valid = trained.s, bm.valid_stream[1].dataset
    accs = [accuracy(student, valid) for student in s.students]
    assert s.valid_accuracies == accs and s.model is s.students[s.chosen]
    logged = {tag: value for tag, value, _ in _events(s, "AOD/student") if tag.endswith("_valid_acc")}
    assert logged == {"AOD/student1_valid_acc": accs[0], "AOD/student2_valid_acc": accs[1]}
    assert [v for tag, v, _ in _events(s, "AOD/chosen_student")] == [s.chosen + 1]
    reinit = [(tag, v, step) for tag, v, step in _events(s, "diag/")]
    assert reinit == [(f"diag/student{k}_reinit_valid_acc", accuracy(m, valid), 1)
                      for k, m in enumerate(trained.reader.start, 1)]


def test_eval_logs_each_students_accuracy_per_experience(trained, bm):
    s = trained.s
    before = len(s.sst_events)
    s.eval(bm.valid_stream)  # two experiences
    s.eval(bm.test_stream[0])  # one experience, not a list
    got = [(e.tag, e.value) for e in s.sst_events[before:] if e.tag.startswith("AOD/student")]
    expected = [(f"AOD/student{k}/{name}_exp{j}_top1", accuracy(student, stream[j].dataset))
                for name, stream, js in (("valid", bm.valid_stream, (0, 1)), ("test", bm.test_stream, (0,)))
                for k, student in enumerate(s.students, 1) for j in js]
    assert sorted(got) == sorted(expected) and len(got) == len(expected)
    s.eval_students = False
    before = len(s.sst_events)
    s.eval(bm.test_stream)
    assert not [e for e in s.sst_events[before:] if e.tag.startswith("AOD/student")]


def test_a_tie_on_the_validation_slice_keeps_student_1(bm):
    # No re-init and one optimizer step on identical students: they stay identical, so they tie.
    s = _aod(reinit=False, valid_stream=bm.valid_stream, train_mb_size=64)
    s.train(bm.train_stream[1], eval_streams=[])
    assert s.valid_accuracies[0] == s.valid_accuracies[1] and s.chosen == 0 and s.model is s.students[0]
    # one iteration in the epoch: its terms are the epoch's logged means
    logged = {tag: value for tag, value, _ in _events(s, "AOD/L_CE/")}
    assert logged == {"AOD/L_CE/student1": float(s.loss_terms["ce_1"]),
                      "AOD/L_CE/student2": float(s.loss_terms["ce_2"])}


def test_an_epoch_without_iterations_logs_no_loss_terms(bm):
    s = _aod()
    s.experience = bm.train_stream[1]
    s._before_training_epoch()
    s._after_training_epoch()
    assert _events(s, "AOD/") == []


def test_the_validation_warning_only_without_a_slice(bm):
    s = _aod(valid_stream=bm.valid_stream)
    s.experience = bm.train_stream[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert s._validation_data() is bm.valid_stream[1].dataset
        s.valid_stream, s.sst_valid_dataset = None, bm.valid_stream[0].dataset
        assert s._validation_data() is bm.valid_stream[0].dataset
    del s.sst_valid_dataset
    message = ("AODStrategy has no validation slice; choosing the student on training data. "
               "Pass valid_stream=benchmark.valid_stream (validation_fraction > 0).")
    with pytest.warns(UserWarning, match="^" + re.escape(message) + "$"):
        s._validation_data()
