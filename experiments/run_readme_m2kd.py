"""Run the README's Python example as written and record its M2KD strategy's accuracy after each step.

The example's block (the README's ``python`` block that calls ``fashion_mnist()``)
is executed unchanged, with ``torch.manual_seed(0)`` first, on the full
Fashion-MNIST (60k / 10k) or, with ``--per-class N``, on a stratified subset of
N training and N test images per class (what ``tests/test_readme.py`` runs).
It writes, per step, the test accuracy on the step's new classes right after
training on them and on all classes seen so far, to ``<out>/<name>.md`` and
``.csv`` (generated; the command is in the file).

    python experiments/run_readme_m2kd.py                       # full data -> docs/runs/readme_m2kd/full_data.md
    python experiments/run_readme_m2kd.py --per-class 100       # the test's subset
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

import avalanche_sst.benchmarks as benchmarks
from avalanche_sst.benchmarks.same_class import stratified_split

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def readme_example() -> str:
    """The README's Python block that loads Fashion-MNIST."""
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "fashion_mnist()" in b]
    return block


def stratified_subset(data, per_class: int, seed: int = 0):
    """``per_class`` images of each class of ``data`` (a stratified, seeded choice)."""
    targets = torch.as_tensor(data.targets)
    share = per_class * len(torch.unique(targets)) / len(targets)
    idx = stratified_split(targets, (share, 1 - share), torch.Generator().manual_seed(seed))[0]
    return benchmarks.TensorImageDataset(data.images[idx], targets[idx])


def run_example(per_class: int | None = None) -> list[dict]:
    """Execute the example (in a temporary folder: it writes TensorBoard logs) and return one row per step:
    ``new`` = accuracy on the step's classes right after training on them, ``seen`` = on every class so far."""
    train, test = benchmarks.fashion_mnist()
    data = (train, test) if per_class is None else (stratified_subset(train, per_class),
                                                    stratified_subset(test, per_class))
    original = benchmarks.fashion_mnist
    benchmarks.fashion_mnist = lambda *a, **k: data
    results: list[dict] = []
    cwd = os.getcwd()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            os.chdir(tmp)
            torch.manual_seed(0)
            exec(compile(readme_example(), str(README), "exec"), {"print": results.append})
    finally:
        os.chdir(cwd)
        benchmarks.fashion_mnist = original
    return [{"step": k + 1, "new": r[f"Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp{k:03d}"],
             "seen": r["Top1_Acc_Stream/eval_phase/test_stream/Task000"]} for k, r in enumerate(results)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=None, help="stratified subset: N train and N test images per class")
    p.add_argument("--out", default="docs/runs/readme_m2kd")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    command = "python experiments/run_readme_m2kd.py " + " ".join(argv if argv is not None else sys.argv[1:])
    from avalanche_sst.experiments.provenance import code_text

    code = code_text()  # before the example runs: the code it runs
    start = time.process_time()
    rows = run_example(args.per_class)
    cpu = time.process_time() - start
    name = "full_data" if args.per_class is None else f"subset_{args.per_class}_per_class"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "new", "seen"])
        writer.writeheader()
        writer.writerows({"step": r["step"], "new": f"{r['new']:.4f}", "seen": f"{r['seen']:.4f}"} for r in rows)
    data = "the full Fashion-MNIST (60k train / 10k test)" if args.per_class is None else \
        f"{args.per_class} training and {args.per_class} test images per class"
    lines = [f"The README's example as written, its M2KD strategy's test accuracy (%) after each step, on {data}; "
             f"torch.manual_seed(0); {cpu / 60:.1f} CPU minutes, torch {torch.__version__}; code: commit {code}.", "",
             f"    {command}", "", "| step | new classes, right after training them | all classes seen |",
             "|---|---:|---:|"]
    lines += [f"| {r['step']} | {100 * r['new']:.1f} | {100 * r['seen']:.1f} |" for r in rows]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
