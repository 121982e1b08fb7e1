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


# Accuracy on each new step's classes right after training on them (that step's test images), the
# README's settings on 100 training / 100 test images per class, torch seed 0, measured by
# `python experiments/run_readme_m2kd.py --per-class 100` (docs/runs/readme_m2kd/subset_100_per_class.md):
# 0.95, 0.195, 0.445, 0.005, 0.0 (mean 0.319). Exemplar-free M2KD with 2-class steps does not learn the
# look-alike later steps (docs/m2kd.md, "Why later steps' classes are not learnt": the snapshots' targets
# for the old units on new-class images are near 1), so the thresholds sit below the measured step 1
# and the measured mean; without the BatchNorm recomputation step 1 reads 0.655.
FIRST_STEP_THRESHOLD = 0.85
MEAN_NEW_CLASS_THRESHOLD = 0.2
IMAGES_PER_CLASS = 100


def test_readme_m2kd_example_learns_each_new_steps_classes():
    """The README's example, as written, on a stratified Fashion-MNIST subset (the full data: 60k)."""
    import importlib.util

    try:
        benchmarks.fashion_mnist()
    except benchmarks.DatasetNotFoundError as err:
        pytest.skip(f"Fashion-MNIST is not installed (scripts/ensure_fashion_mnist.sh): {err}")
    spec = importlib.util.spec_from_file_location("run_readme_m2kd", README.parent / "experiments" / "run_readme_m2kd.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    new_class = [row["new"] for row in script.run_example(per_class=IMAGES_PER_CLASS)]
    print("new classes right after each step:", [round(a, 3) for a in new_class])
    assert len(new_class) == 5
    assert new_class[0] >= FIRST_STEP_THRESHOLD, new_class
    assert sum(new_class) / 5 >= MEAN_NEW_CLASS_THRESHOLD, new_class
