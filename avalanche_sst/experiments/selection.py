"""The one selection rule for every compared method of a paper table.

Each method's continuous hyperparameters are chosen over a grid of at least
:data:`MIN_GRID` values spaced on a log scale, at least :data:`MIN_SEEDS`
seeds, on the validation slices (never the test set); the value with the best
mean score over the seeds is kept (ties: the first in grid order). Every
method compared in one table gets the same grid, so no method is tuned
harder than its rivals. ``lr_factor`` is the grid key every method
understands (it scales the preset's learning rates and a method's own
``Method.lr_args``, e.g. Ada-QPacknet's Adam rate; see
:data:`avalanche_sst.experiments.registry.LR_FACTOR`), so cross-entropy
baselines and the BCE methods of one table are selected over the same values;
``lr_finetune_factor`` scales the later steps' rate alone, for a table whose
first step trains the network every method starts from (the edge tables).
``experiments/select_on_validation.py`` runs it and writes the grid, every
seed's score and the choice. A run that diverged (NaN scores,
:mod:`avalanche_sst.experiments.divergence`) rules its grid point out.
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
from typing import Mapping, Sequence

from avalanche_sst.experiments.registry import parse_variant

__all__ = ["MIN_GRID", "MIN_SEEDS", "at_grid_edge", "best_mean", "best_shared", "check_rule", "chosen_values",
           "compared_method", "grid_variants", "log_grid", "parse_grid"]

MIN_GRID = 4
MIN_SEEDS = 3
# consecutive ratios of a log-spaced grid may differ by this much (values are rounded for names)
LOG_SPACING_TOLERANCE = 0.1


def log_grid(low: float, high: float, n: int) -> tuple[float, ...]:
    """``n`` values from ``low`` to ``high``, equally spaced in log, rounded to 3 significant digits."""
    if not (low > 0 and high > low):
        raise ValueError(f"a log grid needs 0 < low < high, got low={low!r}, high={high!r}")
    if n < MIN_GRID:
        raise ValueError(f"a grid needs at least {MIN_GRID} values (the selection rule), got n={n}")
    values = [low * (high / low) ** (i / (n - 1)) for i in range(n)]
    return tuple(float(f"{v:.3g}") for v in values)


def parse_grid(text: str) -> tuple[str, tuple[float, ...]]:
    """``"lr_factor=1:30:4"`` (low:high:n, log-spaced) or ``"lr_factor=1,3,10,30"`` -> (key, values)."""
    key, eq, spec = text.partition("=")
    if not eq or not key:
        raise ValueError(f"--grid {text!r}: write KEY=LOW:HIGH:N (log-spaced) or KEY=V1,V2,...")
    try:
        if ":" in spec:
            low, high, n = spec.split(":")
            return key, log_grid(float(low), float(high), int(n))
        return key, tuple(float(v) for v in spec.split(","))
    except ValueError as err:
        raise ValueError(f"--grid {text!r}: {err}") from None


def grid_variants(methods: Sequence[str], grid: Mapping[str, Sequence[float]]) -> list[str]:
    """Every method (a variant such as ``m2kd:lam=0`` is kept) at every grid point, in grid order."""
    keys = list(grid)
    out = []
    for method in methods:
        for point in itertools.product(*(grid[k] for k in keys)):
            extra = ",".join(f"{k}={v:g}" for k, v in zip(keys, point))
            out.append(method if not extra else f"{method}{',' if ':' in method else ':'}{extra}")
    return out


def check_rule(methods: Sequence[str], grid: Mapping[str, Sequence], seeds: Sequence[int]) -> None:
    """Refuse a selection that breaks the rule (every method gets ``grid``, so the grids are equal).

    Needs >= :data:`MIN_SEEDS` seeds, and >= :data:`MIN_GRID` log-spaced
    values for every continuous hyperparameter of the grid; a method may not
    fix a hyperparameter the grid varies.
    """
    if len(set(seeds)) < MIN_SEEDS:
        raise ValueError(f"the selection rule needs at least {MIN_SEEDS} seeds, got {sorted(set(seeds))}: "
                         f"pass --seeds 0 1 2")
    if not grid:
        raise ValueError("the selection rule needs a grid: --grid KEY=LOW:HIGH:N (e.g. lr_factor=1:30:4)")
    for key, values in grid.items():
        if not any(isinstance(v, float) for v in values):
            continue  # a discrete setting (a count, a flag) is listed as it is
        ordered = sorted(float(v) for v in values)
        if len(ordered) < MIN_GRID or len(set(ordered)) < len(ordered):
            raise ValueError(f"{key} takes {len(ordered)} values {tuple(ordered)}; the rule needs at least "
                             f"{MIN_GRID} distinct log-spaced ones: --grid {key}=LOW:HIGH:{MIN_GRID}")
        if ordered[0] <= 0:
            raise ValueError(f"{key} values {tuple(ordered)} must be > 0 for a log-spaced grid")
        ratios = [math.log(b / a) for a, b in zip(ordered, ordered[1:])]
        if max(ratios) > (1 + LOG_SPACING_TOLERANCE) * min(ratios):
            raise ValueError(f"{key} values {tuple(ordered)} are not spaced on a log scale; use "
                             f"--grid {key}={ordered[0]:g}:{ordered[-1]:g}:{len(ordered)}")
    for method in methods:
        fixed = set(grid) & set(parse_variant(method)[1])
        if fixed:
            raise ValueError(f"method {method!r} fixes {sorted(fixed)}, which the grid varies: drop it from the "
                             f"method or from --grid")


def compared_method(variant: str, grid_keys: Sequence[str]) -> str:
    """The method a grid variant belongs to: ``m2kd:lam=0,lr_factor=3`` -> ``m2kd:lam=0`` (grid key lr_factor)."""
    base, _, spec = variant.partition(":")
    kept = [item for item in re.split(r",(?![^()]*\))", spec) if item and item.partition("=")[0] not in grid_keys]
    return base if not kept else f"{base}:{','.join(kept)}"


def best_mean(scores: Mapping[str, Sequence[float]], grid_keys: Sequence[str]) -> dict[str, tuple[str, float]]:
    """Per compared method, the grid variant with the best mean score over seeds (ties: the first given)."""
    best: dict[str, tuple[str, float]] = {}
    for name, values in scores.items():
        if not values:
            raise ValueError(f"{name}: no scores")
        method = compared_method(name, grid_keys)
        mean = _mean_or_minus_inf(values)
        if method not in best or mean > best[method][1]:
            best[method] = (name, mean)
    for method, (name, mean) in best.items():
        if mean == -math.inf:
            raise ValueError(f"{method}: a run diverged at every grid point (NaN scores); extend the grid "
                             f"to lower values")
    return best


def _mean_or_minus_inf(values) -> float:
    """The mean score, or -inf when a run diverged (NaN score, experiments.divergence): a grid point at
    which any seed diverges is never kept, whatever its other seeds scored."""
    mean = statistics.fmean(values)
    return mean if not math.isnan(mean) else -math.inf


def chosen_values(best: Mapping[str, tuple[str, float]], grid_keys: Sequence[str]) -> dict[str, dict]:
    """The grid values each compared method keeps, ``{method: {key: value}}``, from :func:`best_mean`'s
    answer: ``{"m2kd:lam=0": ("m2kd:lam=0,lr_factor=3.16", 0.4)}`` -> ``{"m2kd:lam=0": {"lr_factor": 3.16}}``."""
    out = {}
    for method, (variant, _score) in best.items():
        overrides = parse_variant(variant)[1]
        out[method] = {key: overrides[key] for key in grid_keys if key in overrides}
    return out


def at_grid_edge(chosen: Mapping[str, Mapping[str, float]], grid: Mapping[str, Sequence[float]]) -> list[str]:
    """The choices (:func:`chosen_values`' answer) that sit on the lowest or highest value of their grid key,
    as ``"finetune: lr_factor=0.1 (lowest)"``: a value beyond the grid may score better, so extend it."""
    out = []
    for method, values in chosen.items():
        for key, value in values.items():
            ordered = sorted(grid[key])
            if value in (ordered[0], ordered[-1]):
                out.append(f"{method}: {key}={value:g} ({'lowest' if value == ordered[0] else 'highest'})")
    return out


def best_shared(scores: Mapping[str, Sequence[float]], grid_keys: Sequence[str]) -> tuple[dict, float]:
    """One grid point for every compared method (an ablation whose rungs must share their settings):
    the point with the best mean over every method and seed (ties: the first in grid order).

    Every compared method must have scores at every grid point, so each point is averaged over the same runs.
    """
    by_point: dict[tuple, dict[str, Sequence[float]]] = {}
    for name, values in scores.items():
        overrides = parse_variant(name)[1]
        point = tuple((key, overrides[key]) for key in grid_keys)
        by_point.setdefault(point, {})[compared_method(name, grid_keys)] = values
    methods = {m for runs in by_point.values() for m in runs}
    for point, runs in by_point.items():
        if set(runs) != methods or any(not v for v in runs.values()):
            raise ValueError(f"grid point {dict(point)} lacks scores of {sorted(methods - set(runs))}: a shared "
                             f"choice averages every compared method at every point")
    means = {point: _mean_or_minus_inf([v for values in runs.values() for v in values])
             for point, runs in by_point.items()}
    best = max(means, key=lambda point: means[point])  # max keeps the first of equal means
    return dict(best), means[best]
