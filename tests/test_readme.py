"""The README's Python example runs as written (on tiny generated data instead of Fashion-MNIST)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import avalanche_sst.benchmarks as benchmarks

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_readme_example_runs(monkeypatch, make_data, tmp_path):
    (example,) = [b for b in python_blocks(README.read_text()) if "fashion_mnist()" in b]
    tiny = (make_data(16, seed=0, classes=10, size=28), make_data(3, seed=1, classes=10, size=28))
    monkeypatch.setattr(benchmarks, "fashion_mnist", lambda *a, **k: tiny)
    monkeypatch.chdir(tmp_path)  # the example writes TensorBoard logs under runs/
    namespace: dict = {}
    exec(compile(example, str(README), "exec"), namespace)
    assert namespace["m2kd"].clock.train_exp_counter == 5
    assert (tmp_path / "runs" / "sst").is_dir()


# Accuracy on each new step's classes right after training on them (that step's test images),
# measured once with the README's settings on this subset (100 training / 100 test images per class,
# torch seed 0): 0.95, 0.195, 0.445, 0.005, 0.0 (mean 0.319). Exemplar-free distillation from 2-class
# snapshots keeps the old units firing on look-alike new classes (step 5 here: Shirt and Pullover after
# Coat and T-shirt), so later steps are not learnt at this size; the thresholds sit below the
# measured step 1 and the measured mean.
FIRST_STEP_THRESHOLD = 0.85
MEAN_NEW_CLASS_THRESHOLD = 0.2
IMAGES_PER_CLASS = 100


def test_readme_m2kd_example_learns_each_new_steps_classes(monkeypatch, tmp_path):
    """The README's example, as written, on a stratified Fashion-MNIST subset (the full data: 60k)."""
    import torch

    from avalanche_sst.benchmarks.same_class import stratified_split

    try:
        train, test = benchmarks.fashion_mnist()
    except benchmarks.DatasetNotFoundError as err:
        pytest.skip(f"Fashion-MNIST is not installed (scripts/ensure_fashion_mnist.sh): {err}")

    def subset(data, per_class):
        targets = torch.as_tensor(data.targets)
        share = per_class * 10 / len(targets)
        idx = stratified_split(targets, (share, 1 - share), torch.Generator().manual_seed(0))[0]
        return benchmarks.TensorImageDataset(data.images[idx], targets[idx])

    small = (subset(train, IMAGES_PER_CLASS), subset(test, IMAGES_PER_CLASS))
    monkeypatch.setattr(benchmarks, "fashion_mnist", lambda *a, **k: small)
    monkeypatch.chdir(tmp_path)
    (example,) = [b for b in python_blocks(README.read_text()) if "fashion_mnist()" in b]
    results = []
    namespace = {"print": results.append}
    torch.manual_seed(0)
    exec(compile(example, str(README), "exec"), namespace)
    new_class = [r[f"Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp{k:03d}"] for k, r in enumerate(results)]
    print("new classes right after each step:", [round(a, 3) for a in new_class])
    assert len(new_class) == 5
    assert new_class[0] >= FIRST_STEP_THRESHOLD, new_class
    assert sum(new_class) / 5 >= MEAN_NEW_CLASS_THRESHOLD, new_class
