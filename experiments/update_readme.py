"""Copy generated results into README.md between their markers.

    python experiments/update_readme.py

Sections (each only if its source exists):
- ``quick-table``: ``results/quick/table.md``, written by ``make run``;
- ``split-table`` / ``task-table``: ``docs/runs/{split,task}_quick/table.md``, copied from
  ``results/`` after ``experiments/sweep.py --preset split_quick`` / ``task_quick``;
- ``scaling``: ``benchmarks/results/sweep_scaling.md``, the output of ``benchmarks/sweep_scaling.py``;
- ``speed``: ``benchmarks/results/speed_cpu.md``, written by ``make speed``, followed by the
  tiny-model tables ``speed_cpu_resnet8-w4.md`` and ``speed_cpu_mlp-400-400.md`` where they exist
  (``benchmarks/speed.py --model resnet8-w4`` / ``--model mlp-400-400 --phases plain naive eval eval_plain``),
  and the methods against their plain loops, ``speed_methods_cpu.md`` (``benchmarks/speed.py --suite methods``).
Numbers are never typed into the README: rerun the producing command, then this.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = {
    "quick-table": ROOT / "results" / "quick" / "table.md",
    "split-table": ROOT / "docs" / "runs" / "split_quick" / "table.md",
    "task-table": ROOT / "docs" / "runs" / "task_quick" / "table.md",
    "scaling": ROOT / "benchmarks" / "results" / "sweep_scaling.md",
    "speed": ROOT / "benchmarks" / "results" / "speed_cpu.md",
}
# Appended to a section's source, each if it exists.
EXTRA_SOURCES = {
    "speed": [*(ROOT / "benchmarks" / "results" / f"speed_cpu_{model}.md" for model in ("resnet8-w4", "mlp-400-400")),
              ROOT / "benchmarks" / "results" / "speed_methods_cpu.md"],
}


def splice(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"README.md has no <!-- {name}:start --> ... <!-- {name}:end --> markers")
    return pattern.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), text)


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    for name, source in SECTIONS.items():
        if source.exists():
            body = source.read_text()
            for extra in EXTRA_SOURCES.get(name, []):
                if extra.exists():
                    body = body.rstrip() + "\n\n" + extra.read_text()
            if source.suffix != ".md" or name == "scaling":  # plain text output: keep its columns
                body = "```\n" + body.strip() + "\n```\n"
            text = splice(text, name, body)
            print(f"updated section {name} from {source.relative_to(ROOT)}")
        else:
            print(f"skipped section {name}: {source.relative_to(ROOT)} does not exist", file=sys.stderr)
    readme.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
