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
# README's example (ICaRLM2KD, 2,000 exemplars, lr 0.316 chosen on validation slices) on 100 training /
# 100 test images per class, torch seed 0, measured by `python experiments/run_readme_m2kd.py --per-class 100`
# (docs/runs/readme_m2kd/subset_100_per_class.md): 0.945, 0.54, 0.635, 0.395, 0.205 (mean 0.544). The
# exemplar-free M2KD of the earlier example read 0.95, 0.195, 0.445, 0.005, 0.0 there (2-class steps: the
# snapshots' targets keep old units near 1 on new classes, docs/m2kd.md), so a step whose classes are not
# learnt (below 0.05) fails. On the AVX2 path (ONEDNN_MAX_CPU_ISA=AVX2) the same run read 0.91, 0.46,
# 0.625, 0.175, 0.11 (training carries the last digits' differences), so the thresholds sit below both.
FIRST_STEP_THRESHOLD = 0.85
EVERY_STEP_THRESHOLD = 0.05
MEAN_NEW_CLASS_THRESHOLD = 0.35
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
    assert min(new_class) >= EVERY_STEP_THRESHOLD, new_class
    assert sum(new_class) / 5 >= MEAN_NEW_CLASS_THRESHOLD, new_class
