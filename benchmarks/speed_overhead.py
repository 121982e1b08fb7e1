"""Where Naive's time over a plain loop goes, per training iteration, before and after the batched path.

One process, generated uint8 images (1x28x28, 10 classes), batch 128, a
model whose compute is small (``linear``: Flatten + Linear, the default; or
any ``build_model`` name), so what is measured is the framework around it.
Configurations, interleaved per repetition, timed on process CPU time
around ``_train_exp`` (one epoch; data loader creation excluded):

* ``plain``: DataLoader over the uint8 dataset (one gather per batch) + BatchCollate, SGD;
* ``naive``: Avalanche Naive with ``make_evaluator()`` (device metrics, lean dispatch, batched fetch);
* ``naive_no_metrics``: the same with a ``LeanEvaluationPlugin`` without metrics (Avalanche's template alone);
* ``naive_before``: Naive as before this change: Avalanche's ``EvaluationPlugin`` with Avalanche's
  accuracy/loss/forgetting metrics, per-sample fetch, Avalanche's per-epoch FFCV scan.

Then, alone: one batch fetched per sample vs in one gather, Avalanche's
``has_ffcv_support`` vs ours on the experience's dataset, and the callbacks of
Avalanche's evaluator vs ``make_evaluator()``'s per training iteration
(dispatched as ``trigger_plugins`` does, one epoch's start and end included).

    python benchmarks/speed_overhead.py [--model linear] [--samples 5120] [--reps 10] [--doc docs/speed.md]

Prints a table; ``--doc`` also writes it between the ``<!-- overhead:start/end -->``
markers of that file (``benchmarks/results/speed_overhead_cpu.md`` always).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
warnings.filterwarnings("ignore")

from avalanche.benchmarks.utils import data_loader as avalanche_loader  # noqa: E402
from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics, loss_metrics  # noqa: E402
from avalanche.training import Naive  # noqa: E402
from avalanche.training.plugins import EvaluationPlugin  # noqa: E402

from avalanche_sst.benchmarks import TensorImageDataset, same_class_accumulating  # noqa: E402
from avalanche_sst.benchmarks import batched_fetch  # noqa: E402
from avalanche_sst.experiments.tables import machine_description  # noqa: E402
from avalanche_sst.metrics import make_evaluator  # noqa: E402
from avalanche_sst.metrics.lean_evaluation import LeanEvaluationPlugin  # noqa: E402
from avalanche_sst.models import build_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_report import splice_into_doc  # noqa: E402

BATCH = 128


def model_factory(name: str):
    def make():
        torch.manual_seed(0)
        if name == "linear":
            return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
        return build_model(name, num_classes=10, in_channels=1, image_size=28)
    return make


def avalanche_evaluator():
    """make_evaluator()'s metrics as Avalanche builds them (host read per batch, full dispatch)."""
    return EvaluationPlugin(accuracy_metrics(epoch=True, experience=True, stream=True, trained_experience=True),
                            loss_metrics(epoch=True, experience=True, stream=True), forgetting_metrics(stream=True))


class AvalancheLoaders:
    """Within the block, Avalanche's own ConcatDataset (per-sample fetch) and FFCV scan."""

    def __enter__(self):
        avalanche_loader.ConcatDataset = ConcatDataset
        avalanche_loader.has_ffcv_support = batched_fetch._avalanche_has_ffcv_support

    def __exit__(self, *exc):
        batched_fetch.enable_batched_fetch()
        return False


def naive_runner(make_model, evaluator, exp, before: bool = False):
    model = make_model()
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
                     criterion=nn.CrossEntropyLoss(), train_mb_size=BATCH, train_epochs=1, evaluator=evaluator,
                     eval_every=-1)
    seconds = []
    inner = strategy._train_exp

    def timed(*args, **kwargs):
        start = time.process_time()
        inner(*args, **kwargs)
        seconds.append(time.process_time() - start)

    strategy._train_exp = timed

    def run():
        if before:
            with AvalancheLoaders():
                strategy.train(exp, eval_streams=[])
        else:
            strategy.train(exp, eval_streams=[])
        return seconds[-1]

    run.strategy = strategy
    return run


def plain_runner(make_model, train: TensorImageDataset, collate):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    loader = DataLoader(train, batch_size=BATCH, shuffle=True, collate_fn=collate)

    def run():
        start = time.process_time()
        for x, y in loader:
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            optimizer.step()
        return time.process_time() - start

    return run


ITERATION_CALLBACKS = ("before_training_iteration", "before_forward", "after_forward", "before_backward",
                       "after_backward", "before_update", "after_update", "after_training_iteration")


def evaluator_iteration_us(evaluator, strategy, epochs: int = 25, iterations: int = 40) -> float:
    """CPU microseconds an evaluator's callbacks cost per training iteration.

    Dispatched as Avalanche's ``trigger_plugins`` does (``hasattr`` then the
    call), on a strategy left as after a real epoch (its last mini-batch,
    output and loss); each epoch of ``iterations`` includes its start and its
    end (where the epoch metrics are read and emitted).
    """
    def callback(name):
        if hasattr(evaluator, name):
            getattr(evaluator, name)(strategy)

    def epoch():
        callback("before_training_epoch")
        for _ in range(iterations):
            for name in ITERATION_CALLBACKS:
                callback(name)
        callback("after_training_epoch")

    epoch()
    start = time.process_time()
    for _ in range(epochs):
        epoch()
    return (time.process_time() - start) / (epochs * iterations) * 1e6


def template_pieces(strategy, n: int, iterations: int, repeat: int = 20) -> list[str]:
    """Naive's per-iteration pieces alone, in microseconds per training iteration (the last table)."""
    from torch.utils.data import BatchSampler, RandomSampler

    from avalanche.training.utils import trigger_plugins

    def us_per_iteration(fn, per_call_iterations: int) -> float:
        return per_call_ms(fn, repeat) * 1e3 / per_call_iterations

    def callbacks():
        for name in ITERATION_CALLBACKS:
            trigger_plugins(strategy, name)

    def epoch_callbacks():
        trigger_plugins(strategy, "before_training_epoch")
        trigger_plugins(strategy, "after_training_epoch")

    strategy.adapted_dataset = strategy.experience.dataset.train()
    strategy.make_train_dataloader(shuffle=True)
    avalanche_loader_ = strategy.dataloader
    rows = [
        ("batch indices, Avalanche's MultiDatasetSampler", lambda: list(avalanche_loader_._get_loader().batch_sampler),
         iterations),
        ("batch indices, torch BatchSampler (plain loop)",
         lambda: list(BatchSampler(RandomSampler(range(n)), BATCH, False)), iterations),
        (f"callbacks of all {len(strategy.plugins)} plugins (trigger_plugins)", callbacks, 1),
        ("epoch start + end callbacks, per iteration", epoch_callbacks, iterations),
        ("loader set-up per epoch, per iteration", lambda: iter(avalanche_loader_._get_loader()), iterations),
    ]
    lines = ["", f"{'Naive per training iteration, alone':<48} {'us':>8}", "-" * 57]
    for label, fn, its in rows:
        lines.append(f"{label:<48} {us_per_iteration(fn, its):>8.1f}")
    return lines


def per_call_ms(fn, repeat: int) -> float:
    fn()
    start = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - start) / repeat * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="linear")
    p.add_argument("--samples", type=int, default=5120)
    p.add_argument("--reps", type=int, default=10, help="timed epochs per configuration, after one warm-up")
    p.add_argument("--doc", default=None, help="also splice the table into this markdown file")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    train = TensorImageDataset(torch.randint(0, 256, (args.samples, 1, 28, 28), dtype=torch.uint8, generator=g),
                               torch.arange(args.samples) % 10)
    benchmark = same_class_accumulating(train, TensorImageDataset(train.images[:100], train.targets[:100]),
                                        ratios=(1,), seed=0)
    exp = benchmark.train_stream[0]
    make_model = model_factory(args.model)
    evaluators = {"naive": make_evaluator(), "naive_before": avalanche_evaluator()}
    runs = {
        "plain": plain_runner(make_model, train, exp.dataset.collate_fn),
        "naive": naive_runner(make_model, evaluators["naive"], exp),
        "naive_no_metrics": naive_runner(make_model, LeanEvaluationPlugin(), exp),
        "naive_before": naive_runner(make_model, evaluators["naive_before"], exp, before=True),
    }
    times = {k: [] for k in runs}
    for rep in range(args.reps + 1):
        for name in list(runs)[rep % len(runs):] + list(runs)[:rep % len(runs)]:
            seconds = runs[name]()
            if rep:
                times[name].append(seconds)
    iterations = -(-args.samples // BATCH)
    lines = [f"{'configuration':<17} {'ms/it':>7} {'over plain ms/it':>17}", "-" * 43]
    for name, t in times.items():
        over = statistics.median([(a - b) / iterations * 1e3 for a, b in zip(t, times["plain"])])
        lines.append(f"{name:<17} {statistics.median(t) / iterations * 1e3:>7.3f} {over:>+17.3f}")

    data = exp.dataset.train()
    indices = torch.randperm(len(data), generator=g)[:BATCH].tolist()
    collate = data.collate_fn
    fast, slow = batched_fetch.BatchedConcatDataset([data]), ConcatDataset([data])
    lines += ["", f"{'one batch of 128 / one epoch check':<44} {'ms':>8}", "-" * 53,
              f"{'fetch + collate, per sample (before)':<44} "
              f"{per_call_ms(lambda: collate([slow[i] for i in indices]), 200):>8.3f}",
              f"{'fetch + collate, one gather (now)':<44} "
              f"{per_call_ms(lambda: collate(fast.__getitems__(indices)), 200):>8.3f}",
              f"{'fetch + collate, the plain loop (no wrappers)':<44} "
              f"{per_call_ms(lambda: collate(train.__getitems__(indices)), 200):>8.3f}",
              f"{'has_ffcv_support per epoch, Avalanche':<44} "
              f"{per_call_ms(lambda: batched_fetch._avalanche_has_ffcv_support([data]), 10):>8.3f}",
              f"{'has_ffcv_support per epoch, ours':<44} "
              f"{per_call_ms(lambda: batched_fetch.has_ffcv_support([data]), 10):>8.3f}"]
    # The evaluators' callbacks alone, on a strategy holding one mini-batch, its output and loss.
    strategy = runs["naive"].strategy
    strategy.experience = exp
    strategy.mbatch = [t.to(strategy.device) for t in collate(fast.__getitems__(indices))]
    strategy.mb_output = strategy.model(strategy.mb_x)
    strategy.loss = strategy._criterion(strategy.mb_output, strategy.mb_y)
    lines += ["", f"{'evaluator callbacks per training iteration':<44} {'us':>8}", "-" * 53]
    for label, name in (("Avalanche's EvaluationPlugin + metrics", "naive_before"),
                        ("make_evaluator() (lean dispatch, device sums)", "naive")):
        lines.append(f"{label:<44} {evaluator_iteration_us(evaluators[name], strategy):>8.1f}")
    lines += template_pieces(strategy, len(data), iterations)
    table = "\n".join(lines)
    command = "python benchmarks/speed_overhead.py " + " ".join(argv if argv is not None else sys.argv[1:])
    body = (f"`{command.strip()}` on {machine_description()}: model {args.model}, {args.samples} generated "
            f"1x28x28 samples ({iterations} iterations of {BATCH}), process CPU time, median of {args.reps} "
            f"epochs after a warm-up, configurations interleaved:\n\n```\n{table}\n```\n")
    print(body)
    out = REPO / "benchmarks" / "results" / "speed_overhead_cpu.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(body)
    if args.doc:
        doc = Path(args.doc)
        splice_into_doc(doc, "overhead", body)
        print(f"written {out} and the overhead section of {doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
