"""The README's Python example runs as written (on tiny generated data instead of Fashion-MNIST)."""

from __future__ import annotations

import re
from pathlib import Path

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
