"""What a paper table is: :class:`Cell`, :class:`TableSpec`, and the registries of papers and tables.

A paper's table definitions live in one module of this package (``sst_tables``
for the SST paper, seed 000) that calls :func:`register_paper` once and
:func:`register` per table at import; the package ``__init__`` imports it.
Everything else (running, writing, the report) reads :data:`TABLES`.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from avalanche_sst.experiments.presets import Preset

PRESET_NAMES = ("cpu", "paper", "tiny")


@dataclass(frozen=True)
class Paper:
    """A paper whose tables the library reproduces.

    ``id`` is its seed number (``"000"`` for the SST paper); ``citation`` is how
    the report names it (e.g. ``"Lee & Kim 2023"``).
    """

    id: str
    citation: str
    title: str = ""


#: ``Cell.step`` for the last step of each run, whatever its number of steps.
LAST_STEP = -1


@dataclass(frozen=True)
class Cell:
    """One cell of a paper table: the accuracy of ``method`` after ``step`` (1-based), or
    after the last step of the run with ``step=LAST_STEP`` (-1), for a column such as
    "final accuracy" whose step differs between presets (10 tasks in one, 5 in another).

    ``score`` reads another number instead: a score of the setting after that
    step (``"old"``, ``"new"``, ``"mean"``: in %, as the accuracy), or a key of
    the run's ``Method.report`` (e.g. ``"compression_ratio"``: as reported).

    ``overrides`` are ``Preset`` fields for this cell's sweep, as ``(field,
    value)`` pairs; a value may be a dict keyed by preset name (``cpu``,
    ``paper``, ``tiny``). Cells with equal (resolved) overrides share a sweep.
    """

    row: str
    col: str
    method: str
    step: int
    overrides: tuple = ()
    score: Optional[str] = None

    def __post_init__(self):
        if isinstance(self.step, bool) or not isinstance(self.step, int) or \
                not (self.step >= 1 or self.step == LAST_STEP):
            raise ValueError(f"cell {self.row!r}/{self.col!r}: step must be a 1-based step or "
                             f"LAST_STEP (-1) for the run's last step, got {self.step!r}")

    def step_index(self, n_steps: int) -> int:
        """The 0-based index of this cell's step in a run of ``n_steps`` steps."""
        return n_steps - 1 if self.step == LAST_STEP else self.step - 1


@dataclass(frozen=True)
class TableSpec:
    id: str
    title: str
    varies: str  # what the paper varies
    corner: str  # header of the row-label column
    rows: tuple[str, ...]  # the paper's row labels, in order
    columns: tuple[str, ...]  # the paper's column labels, in order
    cells: tuple[Cell, ...]
    presets: Mapping[str, Preset]
    paper_setting: str  # the ``setting`` of its rows in docs/paper_numbers.csv
    paper_source: str  # where in the paper
    paper: str  # the :class:`Paper` id it reproduces, e.g. "000"
    order: str = "rows"  # pairs compared for the ordering sentence: within each row, or "all" cells
    gain: Optional[str] = None  # "row": a Gain(%) row vs the first column; "col": a Gain(%) column
    kind: str = "sweep"  # or "fig3"
    # Paper orderings stated in words (no numbers), as ((row, col) higher, (row, col) lower, quote).
    paper_claims: tuple = ()
    notes: tuple[str, ...] = ()
    decimals: tuple = ()  # (column, decimals) where not 2
    # Another table whose runs this one reads (same presets, e.g. Table 1's students are Table 4's
    # before their incremental step): its sweeps run in that table's folder, so no run is repeated.
    runs_of: Optional[str] = None
    # Non-method settings (NON_METHOD_SETTINGS) in which a compared method may differ from the
    # others, each with the paper's reason: ((method, setting, reason), ...). Any other
    # difference is refused at register() (see settings_differences).
    declared_differences: tuple = ()
    # Column pairs compared in every row by a paired test over the seeds whatever the paper says
    # (an ablation's adjacent rungs), ((column_a, column_b), ...): the report gives a - b and its p.
    paired_columns: tuple = ()
    # The score the validation selection (experiments/select_on_validation.py) maximises when it is
    # not the setting's primary one, e.g. "avg_incremental" for a table of per-step curves.
    selection_score: Optional[str] = None

    def preset(self, name: str, seeds: Optional[Sequence[int]] = None) -> Preset:
        if name not in self.presets:
            raise ValueError(f"{self.id}: unknown preset {name!r}; choose from {sorted(self.presets)}")
        p = self.presets[name]
        return p.replace(seeds=tuple(int(s) for s in seeds)) if seeds else p

    def cell(self, row: str, col: str) -> Optional[Cell]:
        for c in self.cells:
            if c.row == row and c.col == col:
                return c
        return None

    def methods(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.method for c in self.cells))


PAPERS: dict[str, Paper] = {}
TABLES: dict[str, TableSpec] = {}


def register_paper(paper: Paper) -> Paper:
    if paper.id in PAPERS and PAPERS[paper.id] != paper:
        raise ValueError(f"paper id {paper.id!r} is already registered as {PAPERS[paper.id]}")
    PAPERS[paper.id] = paper
    return paper


#: Settings that are not the method and must be equal across a table's compared methods
#: (unless declared): weight decay (step 1, later steps), epochs per step, the method's
#: extra epochs (M2KD's fine-tuning after pruning), batch size, augmentation.
NON_METHOD_SETTINGS = ("weight_decay", "epochs", "extra_epochs", "batch_size", "augment")


def _method_kwargs(variant: str, preset: Preset) -> tuple[dict, dict]:
    """(the variant's kwargs over the preset's method_kwargs, the builder's signature defaults)."""
    from avalanche_sst.experiments import methods  # noqa: F401  (registers every method)
    from avalanche_sst.experiments.registry import METHODS, parse_variant

    base, overrides = parse_variant(variant)
    if base not in METHODS:
        raise ValueError(f"unknown method {base!r} in {variant!r}")
    defaults = {name: p.default for name, p in inspect.signature(METHODS[base].build).parameters.items()
                if p.default is not inspect.Parameter.empty}
    return {**preset.method_kwargs.get(base, {}), **overrides}, defaults


def method_settings(variant: str, preset: Preset) -> dict:
    """The :data:`NON_METHOD_SETTINGS` a method variant runs with under ``preset``: the preset's
    values unless the variant, the preset's ``method_kwargs`` or the builder's defaults set them
    (read from the builder's keyword arguments: ``weight_decay[_first|_after]``, ``epochs``,
    ``budget``, ``finetune_epochs`` with ``prune_ratio``, ``batch_size``, ``augment``)."""
    kwargs, defaults = _method_kwargs(variant, preset)

    def value(name):
        return kwargs.get(name, defaults.get(name))

    def decay(*names):
        found = next((value(n) for n in names if value(n) is not None), None)
        return float(preset.weight_decay if found is None else found)

    epochs = value("epochs") or (preset.epochs_scratch, preset.epochs_finetune)
    if value("budget") not in (None, "preset"):
        epochs = f"budget={value('budget')}"
    extra = 0
    if "finetune_epochs" in defaults and float(value("prune_ratio") or 0) > 0:
        extra = value("finetune_epochs") if value("finetune_epochs") is not None else "method default"
    return {"weight_decay": (decay("weight_decay_first", "weight_decay"), decay("weight_decay_after", "weight_decay")),
            "epochs": tuple(epochs) if isinstance(epochs, (list, tuple)) else epochs, "extra_epochs": extra,
            "batch_size": int(kwargs.get("batch_size", preset.batch_size)),
            "augment": bool(kwargs.get("augment", preset.scenario_kwargs.get("augment", True)))}


def settings_differences(spec: TableSpec, preset_name: str = "cpu") -> list[str]:
    """Each undeclared difference of a non-method setting between methods compared in one sweep."""
    declared = {(m, s) for m, s, *_ in spec.declared_differences}
    problems = []
    for overrides, methods in sweep_groups(spec, preset_name).items():
        preset = spec.presets[preset_name].replace(**dict(overrides))
        settings = {m: method_settings(m, preset) for m in methods}
        for key in NON_METHOD_SETTINGS:
            # a `budget` variant is the equal-compute rival METHOD.md asks for: its epochs differ by design
            values = {m: s[key] for m, s in settings.items()
                      if (m, key) not in declared and not (key == "epochs" and str(s[key]).startswith("budget="))}
            if len(set(map(repr, values.values()))) > 1:
                problems.append(f"{spec.id} ({preset_name}{', ' + str(dict(overrides)) if overrides else ''}): "
                                f"{key} differs: " + ", ".join(f"{m}={v!r}" for m, v in values.items()))
    return problems


def check_settings(spec: TableSpec) -> None:
    """Refuse a table whose compared methods differ in an undeclared non-method setting."""
    unknown = [d for d in spec.declared_differences if len(d) != 3 or d[1] not in NON_METHOD_SETTINGS]
    if unknown:
        raise ValueError(f"{spec.id}: declared_differences takes (method, setting, reason) with a setting "
                         f"from {NON_METHOD_SETTINGS}, got {unknown}")
    problems = [p for name in spec.presets for p in settings_differences(spec, name)]
    if problems:
        raise ValueError("compared methods must share every non-method setting; give them the same one, or "
                         "declare the paper's reason in the table's declared_differences=((method, setting, "
                         "reason), ...):\n  " + "\n  ".join(problems))


def register(spec: TableSpec) -> TableSpec:
    """Add ``spec`` to :data:`TABLES`; its paper must be registered and its id unused."""
    if spec.paper not in PAPERS:
        raise ValueError(f"{spec.id}: paper {spec.paper!r} is not registered; call register_paper() first "
                         f"(registered: {sorted(PAPERS)})")
    if spec.id in TABLES:
        raise ValueError(f"table id {spec.id!r} is already registered (paper {TABLES[spec.id].paper}); "
                         "give the table a paper-specific id, e.g. 'm2kd_table1'")
    unknown = sorted({c for pair in spec.paired_columns for c in pair} - set(spec.columns))
    if unknown or any(len(pair) != 2 for pair in spec.paired_columns):
        raise ValueError(f"{spec.id}: paired_columns takes (column_a, column_b) pairs of the table's columns "
                         f"{spec.columns}; unknown: {unknown}")
    check_settings(spec)
    TABLES[spec.id] = spec
    return spec


def tables_by_paper() -> dict[str, list[TableSpec]]:
    """The registered tables grouped by paper id (ids sorted), each group in registration order."""
    groups: dict[str, list[TableSpec]] = {}
    for spec in TABLES.values():
        groups.setdefault(spec.paper, []).append(spec)
    return {paper: groups[paper] for paper in sorted(groups)}


def preset_set(table_id: str, cpu: Preset, paper: Preset, tiny: Preset) -> dict[str, Preset]:
    """A table's three presets, each named after the table (``table1-cpu``, ...)."""
    return {
        "cpu": cpu.replace(name=f"{table_id}-cpu"),
        "paper": paper.replace(name=f"{table_id}-paper"),
        "tiny": tiny.replace(name=f"{table_id}-tiny"),
    }


def resolve_overrides(cell: Cell, preset_name: str) -> tuple:
    out = []
    for key, value in cell.overrides:
        if isinstance(value, Mapping):
            value = value[preset_name]
        out.append((key, value))
    return tuple(sorted(out))


def sweep_groups(spec: TableSpec, preset_name: str) -> dict[tuple, tuple[str, ...]]:
    """The table's sweeps: resolved overrides -> the methods run under them, in cell order."""
    groups: dict[tuple, list[str]] = {}
    for c in spec.cells:
        methods = groups.setdefault(resolve_overrides(c, preset_name), [])
        if c.method not in methods:
            methods.append(c.method)
    return {k: tuple(v) for k, v in groups.items()}


def sweep_dirname(overrides: tuple) -> str:
    """The folder of the sweep run under ``overrides``, inside the table's folder."""
    if not overrides:
        return "sweep"
    text = "_".join(f"{k}={v}" for k, v in overrides)
    return "sweep_" + re.sub(r"[^A-Za-z0-9._=+-]+", "_", text)
