"""The compared methods of Table 7: LwM (plugin), DML and HPO (strategies), and
their registration in the sweep (runs and resume)."""

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from avalanche.core import SupervisedPlugin
from avalanche.training import Naive
from avalanche.training.templates import SupervisedTemplate

import avalanche_sst.experiments.methods  # noqa: F401  (registers hpo, dml, lwm)
from avalanche_sst.benchmarks import TensorImageDataset, same_class_accumulating
from avalanche_sst.checkpoint import load_checkpoint
from avalanche_sst.experiments.presets import Preset
from avalanche_sst.experiments.sweep import run_sweep
from avalanche_sst.metrics import accuracy
from avalanche_sst.models import resnet_cifar
from avalanche_sst.plugins.lwm import LwMPlugin, default_cam_layer, grad_cam
from avalanche_sst.plugins.schedule import StepwiseCosinePlugin
from avalanche_sst.strategies.dml import DMLStrategy, validation_data
from avalanche_sst.strategies.hpo import DEFAULT_LRS, HPOStrategy, elr_grid, hpo_search

torch.set_num_threads(1)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def make_data(n_per_class, seed, classes=4, size=12):
    """uint8 1 x size x size images whose mean intensity depends on the class."""
    g = torch.Generator().manual_seed(seed)
    ys = torch.arange(classes).repeat_interleave(n_per_class)
    base = (40 + 50 * ys).float().view(-1, 1, 1, 1)
    imgs = (base + 20 * torch.randn(len(ys), 1, size, size, generator=g)).clamp(0, 255).to(torch.uint8)
    return TensorImageDataset(imgs, ys)


@pytest.fixture(scope="module")
def data():
    return make_data(40, seed=1), make_data(10, seed=2)


@pytest.fixture(scope="module")
def bench(data):
    return same_class_accumulating(*data, ratios=(1, 1), seed=0, validation_fraction=0.1)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return resnet_cifar(8, num_classes=4, in_channels=1, width=4)


def sgd(model, lr=0.1, momentum=0.9):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=5e-4)


def common(epochs=(1,), lrs=(0.1, 0.001), plugins=()):
    return dict(train_mb_size=32, eval_mb_size=100, device="cpu", evaluator=None, eval_every=-1,
                plugins=[StepwiseCosinePlugin(lrs=lrs, epochs=epochs), *plugins])


def state_copy(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def events(strategy, prefix):
    return [(e.tag, e.value, e.step) for e in getattr(strategy, "sst_events", []) if e.tag.startswith(prefix)]


# --------------------------------------------------------------------------
# LwM
# --------------------------------------------------------------------------
class Toy(nn.Module):
    """1x1 conv (1 -> 2 channels) + ReLU as the Grad-CAM layer, then GAP + Linear."""

    def __init__(self, fc_weight):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU())
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.block[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.fc.weight.copy_(torch.tensor(fc_weight))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.block(x).mean(dim=(2, 3)))


# Two 2x2 inputs. Activations A_0 = ReLU(x), A_1 = ReLU(-x):
#   x1 = [[1, -1], [2, 0]]: A_0 = [1, 0, 2, 0], A_1 = [0, 1, 0, 0]; GAP (0.75, 0.25)
#   x2 = [[-2, -1], [1, 0]]: A_0 = [0, 0, 1, 0], A_1 = [2, 1, 0, 0]; GAP (0.25, 0.75)
X = torch.tensor([[[[1.0, -1.0], [2.0, 0.0]]], [[[-2.0, -1.0], [1.0, 0.0]]]])
W_TEACHER = [[1.0, 2.0], [3.0, -1.0]]
W_STUDENT = [[3.0, -1.0], [1.0, 2.0]]  # the teacher's rows swapped


def test_grad_cam_matches_hand_computation():
    teacher = Toy(W_TEACHER).eval()
    logits, cam, classes = grad_cam(teacher, teacher.block, X)
    # logits x1: (0.75 + 0.5, 2.25 - 0.25) = (1.25, 2.0) -> class 1
    # logits x2: (0.25 + 1.5, 0.75 - 0.75) = (1.75, 0.0) -> class 0
    assert torch.allclose(logits, torch.tensor([[1.25, 2.0], [1.75, 0.0]]))
    assert classes.tolist() == [1, 0]
    # d y_c / d A_k(h, w) = W[c, k] / 4, so alpha = W[c] / 4.
    # x1, c=1: 0.75 A_0 - 0.25 A_1 = [0.75, -0.25, 1.5, 0] -> ReLU [0.75, 0, 1.5, 0]
    #          / (0.75 sqrt 5) = [1, 0, 2, 0] / sqrt 5
    # x2, c=0: 0.25 A_0 + 0.5 A_1 = [1, 0.5, 0.25, 0] / sqrt(1.3125)
    s5, n2 = math.sqrt(5.0), math.sqrt(1.3125)
    expected = torch.tensor([[1 / s5, 0.0, 2 / s5, 0.0], [1 / n2, 0.5 / n2, 0.25 / n2, 0.0]])
    assert torch.allclose(cam, expected, atol=1e-6)
    assert not cam.requires_grad


def test_lwm_terms_use_teacher_class_and_match_hand_values():
    teacher, student = Toy(W_TEACHER), Toy(W_STUDENT)
    plugin = LwMPlugin(layer="block")
    plugin.set_teacher(teacher)
    acts = []
    h = student.block.register_forward_hook(lambda m, a, o: acts.append(o))
    logits = student(X)
    h.remove()
    kd, at = plugin.terms(X, logits, acts[0])
    # Student maps at the TEACHER's classes (1, 0):
    # x1, c=1: alpha = (1, 2)/4: 0.25 A_0 + 0.5 A_1 = [0.25, 0.5, 0.5, 0] / 0.75 = [1/3, 2/3, 2/3, 0]
    # x2, c=0: alpha = (3, -1)/4: 0.75 A_0 - 0.25 A_1 = [-0.5, -0.25, 0.75, 0] -> [0, 0, 1, 0]
    s5, n2 = math.sqrt(5.0), math.sqrt(1.3125)
    l1_x1 = abs(1 / 3 - 1 / s5) + 2 / 3 + abs(2 / 3 - 2 / s5)
    l1_x2 = 1 / n2 + 0.5 / n2 + (1 - 0.25 / n2)
    assert at.item() == pytest.approx((l1_x1 + l1_x2) / 2, abs=1e-6)
    # KL(p_T || p_S) with p_S = p_T swapped: (p1 - p0) * ln(p1 / p0) = (2 sigmoid(d) - 1) d
    kl = [(2 * torch.sigmoid(torch.tensor(d)).item() - 1) * d for d in (0.75, 1.75)]
    assert kd.item() == pytest.approx(sum(kl) / 2, abs=1e-6)


def test_lwm_attention_term_trains_the_student():
    teacher = tiny_model(0)
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.1 * torch.randn_like(p))
    plugin = LwMPlugin(beta=0.0, gamma=1.0)
    plugin.set_teacher(teacher)
    layer = dict(student.named_modules())[default_cam_layer(student)]
    acts = []
    h = layer.register_forward_hook(lambda m, a, o: acts.append(o))
    x = torch.randn(6, 1, 12, 12)
    logits = student(x)
    h.remove()
    _, at = plugin.terms(x, logits, acts[0])
    assert at.item() > 0
    at.backward()
    # fc reaches the map only through the Grad-CAM weights (d y_c / d A), so a
    # gradient there shows the second-order path (create_graph) is in place.
    assert student.fc.weight.grad.abs().sum() > 0
    assert student.layer3[0].conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in plugin.teacher.parameters())


class TeacherProbe(SupervisedPlugin):
    def __init__(self, lwm):
        super().__init__()
        self.lwm = lwm
        self.modes = []

    def after_training_iteration(self, strategy, **kwargs):
        if self.lwm.teacher is not None:
            self.modes.append(any(m.training for m in self.lwm.teacher.modules()))


def test_lwm_in_training(bench):
    exp0, exp1 = bench.train_stream[0], bench.train_stream[1]
    # Experience 0: LwM adds nothing, so it trains exactly as plain fine-tuning.
    m_ref = tiny_model()
    naive = Naive(model=m_ref, optimizer=sgd(m_ref), **common())
    torch.manual_seed(5)
    naive.train(exp0, eval_streams=[])
    m = tiny_model()
    lwm = LwMPlugin()
    probe = TeacherProbe(lwm)
    strategy = SupervisedTemplate(model=m, optimizer=sgd(m), **common(plugins=(lwm, probe)))
    torch.manual_seed(5)
    strategy.train(exp0, eval_streams=[])
    assert lwm.last_terms is None
    assert same_state(state_copy(m), state_copy(m_ref))
    # The teacher is a frozen eval-mode copy of the model after experience 0.
    assert same_state(state_copy(lwm.teacher), state_copy(m))
    before = state_copy(lwm.teacher)
    strategy.train(exp1, eval_streams=[])
    assert probe.modes and not any(probe.modes)
    assert lwm.last_terms is not None and lwm.last_terms["at"] > 0
    assert events(strategy, "lwm/attention_distillation")
    # The teacher used during experience 1 did not move; the new teacher is the new model.
    saved = lwm.state_dict()
    assert same_state(saved["teacher"], state_copy(m))
    assert not same_state(before, state_copy(m))
    assert all(not p.requires_grad for p in lwm.teacher.parameters())
    restored = LwMPlugin()
    restored.load_state_dict(saved, tiny_model(3))
    assert same_state(state_copy(restored.teacher), saved["teacher"])
    assert not restored.teacher.training


# --------------------------------------------------------------------------
# DML
# --------------------------------------------------------------------------
def test_dml_loss_hand_value():
    m = tiny_model()
    s = DMLStrategy(model=m, optimizer=sgd(m), **common())
    l1 = torch.log(torch.tensor([[0.5, 0.5]]))
    l2 = torch.log(torch.tensor([[0.75, 0.25]]))
    s.mbatch = [torch.zeros(1, 1, 12, 12), torch.tensor([0]), torch.tensor([0])]
    s.is_training = True
    s.mb_output, s.peer_output = l1, l2
    # student 1: CE = ln 2; KL(p2 || p1) = 0.75 ln 1.5 + 0.25 ln 0.5 = 0.1308120
    # student 2: CE = -ln 0.75 = 0.2876821; KL(p1 || p2) = 0.5 ln(4/3) = 0.1438410
    assert s.criterion().item() == pytest.approx(0.6931472 + 0.1308120 + 0.2876821 + 0.1438410, abs=1e-6)
    s.is_training = False  # evaluation: plain cross-entropy of the model
    assert s.criterion().item() == pytest.approx(math.log(2), abs=1e-6)


def test_validation_fallback_is_the_unaugmented_training_data(bench):
    exp = bench.train_stream[0]
    data = validation_data(exp, None)
    assert data.collate_fn.augment is False and len(data) == len(exp.dataset)
    m = tiny_model()
    assert accuracy(m, data) == accuracy(m, data)  # deterministic: no augmentation
    assert validation_data(exp, bench.valid_stream) is bench.valid_stream[0].dataset


class DMLProbe(SupervisedPlugin):
    """Snapshots both students; before selection (end of the last epoch),
    replaces the validation data by the predictions of student ``winner``
    and makes the other student predict one constant class."""

    def __init__(self, winner):
        super().__init__()
        self.winner = winner
        self.start, self.end = {}, {}

    def before_training_exp(self, strategy, **kwargs):
        k = strategy.clock.train_exp_counter
        self.start[k] = (state_copy(strategy.model), state_copy(strategy.peer))

    def after_training_epoch(self, strategy, **kwargs):
        k = strategy.clock.train_exp_counter
        students = {1: strategy.model, 2: strategy.peer}
        win, lose = students[self.winner], students[3 - self.winner]
        x = strategy.valid_stream[k].dataset  # the real validation slice
        xs = torch.cat([b[0] for b in torch.utils.data.DataLoader(x.eval(), batch_size=100,
                                                                   collate_fn=x.collate_fn)])
        win.eval()
        with torch.no_grad():
            y = win(xs).argmax(1)
        win.train()
        constant = int((torch.bincount(y, minlength=4).argmax() + 1) % 4)  # never the majority
        with torch.no_grad():
            lose.fc.weight.zero_()
            lose.fc.bias.zero_()
            lose.fc.bias[constant] = 10.0
        strategy.valid_stream = {k: SimpleNamespace(dataset=TensorDataset(xs, y))}
        self.end[k] = (state_copy(strategy.model), state_copy(strategy.peer))


@pytest.mark.parametrize("winner", [2, 1])
def test_dml_trains_both_and_keeps_the_better(bench, winner):
    m = tiny_model()
    probe = DMLProbe(winner)
    s = DMLStrategy(model=m, optimizer=sgd(m), valid_stream=bench.valid_stream, mutual_first_step=True,
                    **common(plugins=(probe,)))
    for k in (0, 1):
        torch.manual_seed(10 + k)
        s.valid_stream = bench.valid_stream
        s.train(bench.train_stream[k], eval_streams=[])
        (m0, p0), (m1, p1) = probe.start[k], probe.end[k]
        assert not same_state(m0, m1) and not same_state(p0, p1)  # both students trained
        assert not same_state(m1, p1)  # and they are different models
        if k == 0:
            assert not same_state(m0, p0)  # the peer is re-initialised for experience 0
        else:
            assert same_state(m0, p0)  # later steps: both start from the chosen model
        h = s.dml_history[-1]
        assert h["chosen"] == winner
        assert h["val_acc"][winner - 1] == 1.0 and h["val_acc"][2 - winner] < 1.0
        # strategy.model holds the winner's weights (and the peer is re-synced to it)
        chosen_state = (m1, p1)[winner - 1]
        assert same_state(state_copy(s.model), chosen_state)
        assert same_state(state_copy(s.peer), chosen_state)
        logged = {t: v for t, v, st in events(s, "dml/") if st == k}
        assert logged["dml/chosen_student"] == winner
        assert logged["dml/val_acc_student1"] == h["val_acc"][0]
        assert logged["dml/val_acc_student2"] == h["val_acc"][1]
    assert len(s.optimizer.param_groups[0]["params"]) == 2 * len(list(m.parameters()))


def test_dml_step_one_is_plain_training_shared_with_naive(bench):
    """By default every method shares step 1 (as in the paper's Table 7)."""
    m_dml, m_ref = tiny_model(), tiny_model()
    dml = DMLStrategy(model=m_dml, optimizer=sgd(m_dml), valid_stream=bench.valid_stream, **common())
    naive = Naive(model=m_ref, optimizer=sgd(m_ref), **common())
    torch.manual_seed(5)
    dml.train(bench.train_stream[0], eval_streams=[])
    torch.manual_seed(5)
    naive.train(bench.train_stream[0], eval_streams=[])
    assert same_state(state_copy(dml.model), state_copy(m_ref))
    assert same_state(state_copy(dml.peer), state_copy(dml.model))  # the peer starts step 2 from it
    assert dml.dml_history == []  # no selection on step 1


# --------------------------------------------------------------------------
# HPO
# --------------------------------------------------------------------------
def test_hpo_grid_is_anchored_at_the_fine_tuning_effective_lr():
    # the paper: fine-tuning lr 0.001 at momentum 0.9 = ELR 0.01 -> momentum-0 grid 0.01 .. 0.0003
    assert DEFAULT_LRS == elr_grid(0.001, 0.9) == (0.01, 0.003, 0.001, 0.0003)
    # the CPU presets fine-tune at 0.01 with momentum 0.9 (ELR 0.1)
    assert elr_grid(0.01, 0.9) == (0.1, 0.03, 0.01, 0.003)
    # searched at momentum 0.5 instead: lr = ELR * (1 - 0.5)
    assert elr_grid(0.01, 0.9, momentum=0.5) == (0.05, 0.015, 0.005, 0.0015)
    with pytest.raises(ValueError, match="base_momentum"):
        elr_grid(0.01, 1.0)
    # the sweep builds HPO around its preset's fine-tuning
    from avalanche_sst.experiments.methods import StrategyContext, get_method
    from avalanche_sst.metrics import make_evaluator

    for lr, grid in ((0.01, (0.1, 0.03, 0.01, 0.003)), (0.001, DEFAULT_LRS)):
        ctx = StrategyContext(model=tiny_model(), config=Preset(name="g", lr_finetune=lr, momentum=0.9),
                              evaluator=make_evaluator(), device=torch.device("cpu"))
        assert tuple(get_method("hpo").build(ctx).lrs) == grid


def test_hpo_search_core_keeps_best_and_restarts_each_candidate():
    model = nn.Linear(2, 1)
    start = state_copy(model)
    seen = []

    def train(i, lr):
        seen.append((state_copy(model), torch.rand(3)))
        with torch.no_grad():
            model.weight.fill_(lr)

    accs = {0.1: 0.5, 0.2: 0.9, 0.3: 0.9}
    result = hpo_search(model, [0.1, 0.2, 0.3], train, lambda: accs[round(model.weight[0, 0].item(), 6)])
    assert result.best_lr == 0.2 and result.accuracies == [0.5, 0.9, 0.9]  # ties: the first
    assert torch.allclose(model.weight, torch.full((1, 2), 0.2))
    assert all(same_state(s, start) and torch.equal(r, seen[0][1]) for s, r in seen)


class HPOProbe(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.first_state, self.first_batch, self.lrs = {}, {}, {}

    def before_training_epoch(self, strategy, **kwargs):
        c = strategy.hpo_candidate
        if c is not None:
            self.first_state.setdefault(c, state_copy(strategy.model))
            self.lrs.setdefault(c, []).append(strategy.optimizer.param_groups[0]["lr"])
            self.momentum = strategy.optimizer.param_groups[0]["momentum"]

    def before_training_iteration(self, strategy, **kwargs):
        c = strategy.hpo_candidate
        if c is not None and c not in self.first_batch:
            self.first_batch[c] = strategy.mb_x.clone()


def test_hpo_strategy_chooses_the_best_validated_lr(bench):
    m = tiny_model()
    probe = HPOProbe()
    grid = (2.0, 0.1, 0.0001)  # too large, reasonable, too small
    kwargs = common(epochs=(3, 2), plugins=(probe,))
    kwargs["train_mb_size"] = 16
    s = HPOStrategy(model=m, optimizer=sgd(m), valid_stream=bench.valid_stream, lrs=grid, **kwargs)
    torch.manual_seed(0)
    s.train(bench.train_stream[0], eval_streams=[])
    assert s.chosen_lrs == [] and probe.first_state == {}  # experience 0: no search
    torch.manual_seed(1)
    s.train(bench.train_stream[1], eval_streams=[])
    accs = [v for t, v, st in events(s, "hpo/val_acc/")]
    assert [t for t, v, st in events(s, "hpo/val_acc/")] == [f"hpo/val_acc/lr={lr:g}" for lr in grid]
    assert len(set(accs)) > 1  # the grid matters on this data
    best = grid[max(range(len(grid)), key=lambda i: (accs[i], -i))]
    assert s.chosen_lrs == [best]
    assert events(s, "hpo/chosen_lr")[-1][1] == pytest.approx(best)
    # every candidate: same starting weights, same first batch, its own cosine schedule
    states = [probe.first_state[i] for i in range(len(grid))]
    assert all(same_state(states[0], st) for st in states[1:])
    assert all(torch.equal(probe.first_batch[0], probe.first_batch[i]) for i in range(1, len(grid)))
    for i, lr in enumerate(grid):
        assert probe.lrs[i] == pytest.approx([lr, lr * (1 + math.cos(math.pi / 2)) / 2])
    assert probe.momentum == 0.0
    # the kept model is the winner: its validation accuracy is the best logged one
    assert accuracy(s.model, bench.valid_stream[1].dataset) == pytest.approx(max(accs))
    st = s.hpo_state_dict()
    s2 = HPOStrategy(model=tiny_model(), optimizer=sgd(tiny_model()), **common())
    s2.load_hpo_state_dict(st)
    assert s2.chosen_lrs == s.chosen_lrs


# --------------------------------------------------------------------------
# the sweep: runs and resumes
# --------------------------------------------------------------------------
def tiny_preset(methods):
    return Preset(name="tiny", model="resnet8-w4", methods=methods, ratios=(1, 1), seeds=(0,),
                  validation_fraction=0.1, batch_size=16, eval_batch_size=100,
                  epochs_scratch=3, epochs_finetune=2, num_threads=1)


class Interrupt(SupervisedPlugin):
    def before_training_exp(self, strategy, **kwargs):
        if strategy.clock.train_exp_counter == 1:
            raise KeyboardInterrupt("simulated crash")


def final_state(out, method):
    return load_checkpoint(out / method / "seed0" / "checkpoint.pt")


def test_sweep_runs_and_resumes(tmp_path, data):
    quiet = lambda msg: None  # noqa: E731
    methods = ("hpo", "dml", "lwm")
    full = {r.method: r.accuracies for r in run_sweep(tiny_preset(methods), tmp_path / "full",
                                                      data=data, log=quiet)}
    assert set(full) == set(methods)
    for accs in full.values():
        assert len(accs) == 2 and all(0.25 < a <= 1.0 for a in accs)  # better than chance
    assert (tmp_path / "full" / "table.md").exists()
    assert final_state(tmp_path / "full", "hpo")["method"]["chosen_lrs"][0] in (0.01, 0.003, 0.001, 0.0003)
    assert final_state(tmp_path / "full", "lwm")["method"]["teacher"] is not None

    out = tmp_path / "crashed"
    for name in methods:
        with pytest.raises(KeyboardInterrupt):
            run_sweep(tiny_preset((name,)), out, data=data, log=quiet,
                      extra_plugins=lambda method, seed: [Interrupt()])
        assert final_state(out, name)["step"] == 1
    resumed = {r.method: r.accuracies for r in run_sweep(tiny_preset(methods), out, data=data, log=quiet)}
    # DML and HPO reset their optimizer state every step, so a resumed run is
    # identical to an uninterrupted one, weights included.
    for name in ("dml", "hpo"):
        assert resumed[name] == full[name]
        a, b = final_state(tmp_path / "full", name), final_state(out, name)
        assert same_state(a["model"], b["model"])
    assert same_state(final_state(tmp_path / "full", "dml")["method"]["peer"],
                      final_state(out, "dml")["method"]["peer"])
    # LwM runs on Avalanche's template, which keeps SGD momentum across steps
    # (not checkpointed), so its resumed step 2 may differ slightly; it finishes.
    assert resumed["lwm"][0] == full["lwm"][0] and len(resumed["lwm"]) == 2
