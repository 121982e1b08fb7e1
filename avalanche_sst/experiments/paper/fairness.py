"""Which tables compare methods that did not get the same hyperparameters or budgets (issue 21, point 6).

Read from the registered table specs and their presets, and from the
selection records under ``docs/runs/selection/<table>/`` (the variants
``experiments/select_on_validation.py`` tried), never typed: per table and
sweep,

* a non-method setting (:data:`~avalanche_sst.experiments.paper.specs.NON_METHOD_SETTINGS`:
  weight decay, epochs, extra epochs, batch, augmentation) that differs between
  compared methods, with the reason the table declares, or an equal-compute
  ``budget=`` variant;
* learning-rate arguments (``lr*`` keys of a method's preset ``method_kwargs``
  and variant; ``lr_factor=1`` is the preset's rate) that differ;
* methods selected on validation while others of the same table were not.

:func:`fairness_section` is the report's section; ``docs/results.md`` carries it.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable, Optional

from avalanche_sst.experiments.paper.specs import (NON_METHOD_SETTINGS, TableSpec, _method_kwargs, method_settings,
                                                   sweep_groups)
from avalanche_sst.experiments.registry import LR_FACTOR, LR_FINETUNE_FACTOR

SECTION_TITLE = "## Compared methods with different hyperparameters or budgets"


def tuned_methods(table_id: str, selection_root: str | Path = "docs/runs/selection") -> Optional[set[str]]:
    """The base methods a table's selection record tried (``scores.csv`` or ``runs.csv``); None: no record."""
    from avalanche_sst.experiments.registry import parse_variant

    folder = Path(selection_root) / table_id
    for name, column in (("scores.csv", "variant"), ("runs.csv", "method")):
        path = folder / name
        if path.exists():
            if name == "runs.csv":
                from avalanche_sst.experiments.paper.formatting import read_runs_csv
                variants = [r["method"] for r in read_runs_csv(path)]
            else:
                with open(path, newline="") as f:
                    variants = [r[column] for r in csv.DictReader(f)]
            return {parse_variant(v)[0] for v in variants}
    return None


def learning_rates(variant: str, preset) -> dict:
    """The ``lr*`` arguments a method variant runs with beyond the preset's rates (a factor of 1 dropped)."""
    kwargs, _defaults = _method_kwargs(variant, preset)
    return {k: v for k, v in sorted(kwargs.items())
            if k.startswith("lr") and not (k in (LR_FACTOR, LR_FINETUNE_FACTOR) and v == 1)}


def _grouped(values: dict) -> str:
    """``{m: v}`` -> ``"v1 for a, b; v2 for c"`` (values in first-seen order)."""
    by_value: dict[str, list[str]] = {}
    for method, value in values.items():
        by_value.setdefault(value if isinstance(value, str) else repr(value), []).append(f"`{method}`")
    return "; ".join(f"{value} for {', '.join(methods)}" for value, methods in by_value.items())


def table_differences(spec: TableSpec, preset_name: str = "cpu",
                      selection_root: str | Path = "docs/runs/selection") -> list[str]:
    """Each way the compared methods of ``spec`` (under preset ``preset_name``) were not treated alike."""
    out = []
    declared = {(m, s): reason for m, s, reason in spec.declared_differences}
    for overrides, methods in sweep_groups(spec, preset_name).items():
        if len(methods) < 2:
            continue
        preset = spec.presets[preset_name].replace(**dict(overrides))
        where = f" (sweep {dict(overrides)})" if overrides else ""
        settings = {m: method_settings(m, preset) for m in methods}
        for key in NON_METHOD_SETTINGS:
            values = {m: s[key] for m, s in settings.items()}
            if len(set(map(repr, values.values()))) > 1:
                reasons = sorted({declared[m, key] for m in methods if (m, key) in declared})
                why = f" (declared: {' / '.join(reasons)})" if reasons else ""
                out.append(f"{key}{where}: {_grouped(values)}{why}")
        lrs = {m: learning_rates(m, preset) for m in methods}
        if len(set(map(repr, lrs.values()))) > 1:
            own = f"the preset's (lr_scratch={preset.lr_scratch:g}, lr_finetune={preset.lr_finetune:g})"
            shown = {m: ", ".join(f"{k}={v}" for k, v in lr.items()) or own for m, lr in lrs.items()}
            out.append(f"learning rate{where}: {_grouped(shown)}")
    tuned = tuned_methods(spec.id, selection_root)
    if tuned is not None:
        from avalanche_sst.experiments.registry import parse_variant

        bases = list(dict.fromkeys(parse_variant(m)[0] for m in spec.methods()))
        untuned = [b for b in bases if b not in tuned]
        if untuned:
            out.append(f"selected on validation (`{Path(selection_root).as_posix()}/{spec.id}`): "
                       f"{', '.join(f'`{b}`' for b in bases if b in tuned)}; not selected: "
                       f"{', '.join(f'`{b}`' for b in untuned)}")
    return out


def fairness_section(specs: Iterable[TableSpec], preset_name: str = "cpu",
                     selection_root: str | Path = "docs/runs/selection") -> str:
    """The report's section: one entry per table whose compared methods differ, then the tables that do not."""
    specs = list(specs)
    lines = [SECTION_TITLE, "",
             f"Generated from the table specs, their `{preset_name}` presets and the selection records under "
             f"`{Path(selection_root).as_posix()}/` (`avalanche_sst/experiments/paper/fairness.py`): non-method "
             "settings, learning-rate arguments and validation selection that differ between a table's "
             "compared methods.", ""]
    even = []
    for spec in specs:
        if preset_name not in spec.presets:
            continue
        differences = table_differences(spec, preset_name, selection_root)
        if differences:
            lines.append(f"- **{spec.id}**: " + "; ".join(differences) + ".")
        else:
            even.append(f"`{spec.id}`")
    if even:
        lines += ["", "No such difference: " + ", ".join(even) + "."]
    return "\n".join(lines) + "\n"
