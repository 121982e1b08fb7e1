"""The batched data path: one gather per mini-batch, the same stream as the
per-sample fetch, and no per-iteration host reads in the default evaluator."""

from __future__ import annotations

import pytest
import torch
from avalanche.benchmarks.utils import data_loader as avalanche_loader
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive, Replay
from torch import nn
from torch.utils.data import ConcatDataset

from avalanche_sst.benchmarks import TensorImageDataset, class_incremental, permuted, same_class_accumulating
from avalanche_sst.benchmarks.batched_fetch import BatchedConcatDataset
from avalanche_sst.metrics import make_evaluator
from avalanche_sst.metrics.device_accuracy import DeviceAccuracy, DeviceLoss
from conftest import make_images


class Recorder(SupervisedPlugin):
    """Copies of every training and evaluation mini-batch, in order."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def before_forward(self, strategy, **kwargs):
        self.batches.append(("train", *(t.clone() for t in strategy.mbatch)))

    def before_eval_forward(self, strategy, **kwargs):
        self.batches.append(("eval", *(t.clone() for t in strategy.mbatch)))


def _model(in_features: int, classes: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, classes))


def _run(benchmark, strategy_cls, seed: int, **kwargs) -> list:
    recorder = Recorder()
    model = _model(64, benchmark.num_classes)
    strategy = strategy_cls(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                            criterion=nn.CrossEntropyLoss(), train_mb_size=16, train_epochs=2, eval_mb_size=32,
                            evaluator=make_evaluator(), plugins=[recorder], eval_every=-1, **kwargs)
    torch.manual_seed(seed)
    for exp in benchmark.train_stream:
        strategy.train(exp, eval_streams=[])
        strategy.eval(benchmark.test_stream)
        if getattr(benchmark, "valid_stream", None) is not None:
            strategy.eval(benchmark.valid_stream)
    return recorder.batches


def _benchmarks():
    train, test = make_images(40, seed=0), make_images(20, seed=1)
    return {
        "class_incremental": class_incremental(train, test, classes_per_step=2, seed=3, validation_fraction=0.1),
        "same_class": same_class_accumulating(train, test, ratios=(1, 1), seed=1, label_noise=0.2),
        "permuted": permuted(train, test, n_tasks=2, seed=2, augment=True),
    }


@pytest.mark.parametrize("name,strategy_cls,kwargs", [
    ("class_incremental", Naive, {}),
    ("same_class", Naive, {}),
    ("permuted", Naive, {}),
    ("class_incremental", Replay, {"mem_size": 30}),
])
def test_batched_fetch_gives_the_per_sample_stream(monkeypatch, name, strategy_cls, kwargs):
    """Same samples, same order, same crops and flips under a seed, in training
    (Replay: the current data and its buffer), evaluation and validation."""
    assert avalanche_loader.ConcatDataset is BatchedConcatDataset  # what avalanche_sst installs
    batched = _run(_benchmarks()[name], strategy_cls, seed=7, **kwargs)
    monkeypatch.setattr(avalanche_loader, "ConcatDataset", ConcatDataset)  # torch's: one sample at a time
    per_sample = _run(_benchmarks()[name], strategy_cls, seed=7, **kwargs)
    assert len(batched) == len(per_sample) > 0
    assert {b[0] for b in batched} == {"train", "eval"}
    for got, want in zip(batched, per_sample):
        assert got[0] == want[0] and len(got) == len(want)
        for a, b in zip(got[1:], want[1:]):
            assert a.dtype == b.dtype and torch.equal(a, b)


def test_one_gather_per_mini_batch_and_no_per_sample_calls(fetches):
    benchmark = _benchmarks()["class_incremental"]
    iterations = []

    class Iterations(SupervisedPlugin):
        def before_training_iteration(self, strategy, **kwargs):
            iterations.append(strategy.clock.train_exp_iterations)

    model = _model(64, benchmark.num_classes)
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                     criterion=nn.CrossEntropyLoss(), train_mb_size=16, train_epochs=2,
                     evaluator=make_evaluator(), plugins=[Iterations()], eval_every=-1)
    fetches.update(gather=0, getitem=0)  # count only what training fetches
    strategy.train(benchmark.train_stream[0], eval_streams=[])
    assert len(iterations) == 2 * 5  # 72 samples in batches of 16, two epochs
    assert fetches["gather"] == len(iterations)
    assert fetches["getitem"] == 0


def test_gathered_batch_reads_as_per_sample_items():
    """A collate that does not know GatheredBatch still sees (image, int, int) samples."""
    benchmark = _benchmarks()["class_incremental"]
    data = benchmark.train_stream[1].dataset.train()
    indices = [4, 0, 9, 2]
    batch = BatchedConcatDataset([data]).__getitems__(indices)
    for got, want in zip(batch, [data[i] for i in indices]):
        assert torch.equal(got[0], want[0]) and list(got[1:]) == list(want[1:])
    assert [tuple(batch[k][1:]) for k in range(4)] == [tuple(data[i][1:]) for i in indices]


# --- host reads -------------------------------------------------------------------

_HOST_READS = ("item", "cpu", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__")


def _count_host_reads(monkeypatch, run) -> int:
    count = [0]
    for name in _HOST_READS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, **kwargs):
            count[0] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    try:
        run()
    finally:
        monkeypatch.undo()
    return count[0]


def _epoch_reads(monkeypatch, n_per_class: int) -> tuple[int, int, dict]:
    """(host reads, iterations) of one training epoch of Naive + make_evaluator()."""
    train, test = make_images(n_per_class, seed=0), make_images(5, seed=1)
    benchmark = same_class_accumulating(train, test, ratios=(1,), seed=0)
    model = _model(64, benchmark.num_classes)
    evaluator = make_evaluator()
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                     criterion=nn.CrossEntropyLoss(), train_mb_size=8, train_epochs=1,
                     evaluator=evaluator, eval_every=-1)
    strategy.train(benchmark.train_stream[0], eval_streams=[])  # warm-up: lazy one-off set-up
    reads = _count_host_reads(monkeypatch, lambda: strategy.train(benchmark.train_stream[0], eval_streams=[]))
    return reads, -(-len(train) // 8), evaluator.get_last_metrics()


def test_training_epoch_host_reads_do_not_grow_with_iterations(monkeypatch):
    few, few_iters, _ = _epoch_reads(monkeypatch, 4)
    many, many_iters, metrics = _epoch_reads(monkeypatch, 32)
    assert (few_iters, many_iters) == (2, 16)
    assert many == few  # O(1) per epoch, not per iteration
    assert few <= 12
    # The values still reach the loggers (read once, at the end of the epoch).
    assert 0.0 <= metrics["Top1_Acc_Epoch/train_phase/train_stream/Task000"] <= 1.0
    assert metrics["Loss_Epoch/train_phase/train_stream/Task000"] > 0.0


def test_device_metrics_equal_avalanche_values():
    """Same float64 arithmetic as Avalanche's Accuracy and LossMetric, bit for bit."""
    from avalanche.evaluation.metrics import Accuracy
    from avalanche.evaluation.metrics.loss import LossMetric

    g = torch.Generator().manual_seed(0)
    ours, theirs, our_loss, their_loss = DeviceAccuracy(), Accuracy(), DeviceLoss(), LossMetric()
    for k, n in enumerate(torch.randint(1, 200, (60,), generator=g).tolist()):
        logits = torch.randn(n, 5, generator=g)
        y = torch.randint(0, 5, (n,), generator=g)
        loss = torch.rand((), generator=g, dtype=torch.float64 if k % 3 == 0 else torch.float32) * 3
        for acc in (ours, theirs):
            acc.update(logits, y)
        for lm in (our_loss, their_loss):
            lm.update(loss if k % 2 else loss.expand(3), n)  # a reduced loss, and one to average
        if k in (20, 21):  # read mid-way (twice): the pending batches are folded once
            assert ours.result() == theirs.result() and our_loss.result() == their_loss.result()
    assert ours.result() == theirs.result()
    assert our_loss.result() == their_loss.result()
    # Hand-computed on a tiny batch: 2 of 3 right, then 1 of 1.
    acc = DeviceAccuracy()
    acc.update(torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]), torch.tensor([1, 0, 0]))
    acc.update(torch.tensor([1]), torch.tensor([1]))
    assert acc.result() == pytest.approx(3 / 4)
    acc.reset()
    assert acc.result() == 0.0
    # Avalanche sums (hits / n) * n per batch, which is not always the hit count: 15 of 22, then 0 of 1.
    acc.update(torch.ones(22), torch.cat([torch.ones(15), torch.zeros(7)]))
    acc.update(torch.ones(1), torch.zeros(1))
    assert acc.result() == ((15 / 22) * 22 + 0.0) / 23 != 15 / 23


def test_device_metric_updates_make_no_host_read(monkeypatch):
    accuracy, loss = DeviceAccuracy(), DeviceLoss()
    logits, y = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]), torch.tensor([1, 0, 0])
    reads = _count_host_reads(monkeypatch, lambda: [(accuracy.update(logits, y), loss.update(torch.tensor(0.5), 3))
                                                    for _ in range(10)])
    assert reads == 0
    assert _count_host_reads(monkeypatch, lambda: (accuracy.result(), loss.result())) <= 2  # one list read each
    assert accuracy.result() == pytest.approx(2 / 3) and loss.result() == 0.5


# --- lean evaluation dispatch and the FFCV scan ---------------------------------------


class CountingLogger(SupervisedPlugin):
    """A logger-like plugin with a per-iteration callback: it must still be called."""

    def __init__(self):
        super().__init__()
        self.after_forward_calls = 0
        self.logged = []

    def log_metrics(self, values):
        self.logged.extend((v.name, v.value) for v in values)

    def after_forward(self, strategy, metric_values=None, **kwargs):
        self.after_forward_calls += 1


def test_lean_evaluation_gives_avalanche_results_with_fewer_calls(monkeypatch):
    from avalanche.benchmarks.scenarios.generic_scenario import CLExperience
    from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics, loss_metrics
    from avalanche.training.plugins import EvaluationPlugin

    from avalanche_sst.metrics.device_accuracy import device_metrics
    from avalanche_sst.metrics.lean_evaluation import LeanEvaluationPlugin

    benchmark = _benchmarks()["class_incremental"]
    copies = {"n": 0}
    logging = CLExperience.logging

    def counting_logging(self):
        copies["n"] += 1
        return logging(self)

    monkeypatch.setattr(CLExperience, "logging", counting_logging)
    results = {}
    for plugin_cls in (EvaluationPlugin, LeanEvaluationPlugin):
        logger = CountingLogger()
        evaluator = plugin_cls(
            device_metrics(accuracy_metrics(epoch=True, experience=True, stream=True, trained_experience=True)),
            device_metrics(loss_metrics(epoch=True, experience=True, stream=True)),
            device_metrics(forgetting_metrics(stream=True)), loggers=[logger])
        model = _model(64, benchmark.num_classes)
        strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                         criterion=nn.CrossEntropyLoss(), train_mb_size=16, train_epochs=2, eval_mb_size=32,
                         evaluator=evaluator, eval_every=-1)
        copies["n"] = 0
        torch.manual_seed(0)
        for exp in benchmark.train_stream:
            strategy.train(exp, eval_streams=[])
            strategy.eval(benchmark.test_stream)
        results[plugin_cls] = (evaluator.get_last_metrics(), logger.logged, logger.after_forward_calls, copies["n"])
    full, lean = results[EvaluationPlugin], results[LeanEvaluationPlugin]
    assert lean[0] == full[0] and len(full[0]) == 10  # same metric names and values
    assert lean[1] == full[1]  # the logger got the same values in the same order
    assert lean[2] == full[2] == 2 * 2 * 5  # a callback a logger implements is still sent (2 exps x 2 epochs x 5 its)
    assert lean[3] < full[3] / 3  # far fewer experience copies (callbacks dispatched)


def test_lean_evaluation_sends_training_iterations_to_training_metrics_only():
    from avalanche_sst.metrics.lean_evaluation import handles

    evaluator = make_evaluator()
    acting = {cb: sorted(str(m) for m in evaluator.metrics if handles(m, cb))
              for cb in ("before_training_iteration", "after_training_iteration", "before_forward",
                         "after_eval_iteration", "after_training_epoch")}
    assert acting["before_training_iteration"] == []
    assert acting["after_training_iteration"] == ["Loss_Epoch", "Top1_Acc_Epoch"]
    assert acting["before_forward"] == []
    assert "Top1_Acc_Epoch" not in acting["after_eval_iteration"]
    assert {"Top1_Acc_Exp", "Top1_Acc_Stream", "Loss_Exp", "StreamForgetting"} <= set(acting["after_eval_iteration"])
    assert {"Loss_Epoch", "Top1_Acc_Epoch"} <= set(acting["after_training_epoch"])  # per epoch: not narrowed


def test_lean_evaluation_reads_attributes_plainly_and_hides_callbacks_nobody_handles():
    """Avalanche's trigger_plugins asks hasattr first: a callback no metric or logger acts on is absent."""
    evaluator = make_evaluator()
    assert type(evaluator).__getattribute__ is object.__getattribute__  # no Python call per attribute read
    assert not hasattr(evaluator, "before_backward") and not hasattr(evaluator, "before_training_iteration")
    assert hasattr(evaluator, "after_training_iteration") and hasattr(evaluator, "after_training_epoch")
    assert hasattr(evaluator, "before_eval")  # EvaluationPlugin's own method
    with pytest.raises(AttributeError, match="no_such_thing"):
        evaluator.no_such_thing
    evaluator.loggers.append(CountingLogger())  # a logger with after_forward: now it is there
    assert hasattr(evaluator, "after_forward") and not hasattr(evaluator, "before_backward")


def test_ffcv_check_skips_the_per_sample_scan_and_defers_when_a_leaf_has_ffcv_info(monkeypatch):
    from avalanche_sst.benchmarks import batched_fetch
    from conftest import subset_of

    benchmark = _benchmarks()["class_incremental"]
    data = benchmark.train_stream[0].dataset.train()
    calls = []
    monkeypatch.setattr(batched_fetch, "_avalanche_has_ffcv_support", lambda ds: calls.append(ds) or "avalanche")
    assert batched_fetch.has_ffcv_support([data]) is False and calls == []
    assert avalanche_loader.has_ffcv_support is batched_fetch.has_ffcv_support
    monkeypatch.setattr(subset_of(data), "ffcv_info", object(), raising=False)
    assert batched_fetch.has_ffcv_support([data]) == "avalanche" and len(calls) == 1
