"""The paper's numbers and the ordering comparison: does our table rank its cells as the paper does?

:func:`load_paper_numbers` reads ``docs/paper_numbers.csv``; :func:`table_ordering`
compares our cells with them (or with orderings the paper states in words),
each pair also tested against seed noise (:func:`seed_test`), and
:func:`ordering_sentence` says the result in one sentence.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence

from avalanche_sst.experiments.paper.specs import TableSpec


@dataclass(frozen=True)
class PaperNumber:
    """One number a paper reports; ``paper`` (a ``Paper`` id) is None where the CSV has no such column."""

    table: str
    setting: str
    row: str
    column: str
    value: float
    std: Optional[float]
    source: str
    paper: Optional[str] = None


def load_paper_numbers(path: str | Path) -> list[PaperNumber]:
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            out.append(PaperNumber(r["table"], r["setting"], r["row"], r["column"], float(r["value"]),
                                   float(r["std"]) if r["std"] not in ("", None) else None, r["source"],
                                   r.get("paper") or None))
    return out


def paper_cells(numbers: Iterable[PaperNumber], spec: TableSpec) -> dict[tuple[str, str], PaperNumber]:
    """The numbers of ``spec``'s table and setting, keyed ``(row, column)``; numbers naming another paper
    are skipped (two papers may both have a "Table 1")."""
    table = spec.paper_source.split(",")[0].strip()
    return {(p.row, p.column): p for p in numbers if p.table == table and p.setting == spec.paper_setting
            and p.paper in (None, spec.paper)}


@dataclass
class Ordering:
    pairs: int = 0  # pairs compared (the paper orders them strictly)
    agree: int = 0
    flipped: list = field(default_factory=list)  # (hi, lo, paper_hi, paper_lo, ours_hi, ours_lo, p or None)
    tied: list = field(default_factory=list)  # ours equal where the paper orders them
    best_paper: list = field(default_factory=list)  # per group: (paper's best, our best)
    # With a significance test: pairs whose difference of our means is significant at ALPHA.
    with_test: bool = False
    agree_significant: int = 0
    flipped_significant: int = 0


#: Two-sided level at which a difference of our means counts as beyond seed noise.
ALPHA = 0.05


def compare_orderings(ours: Mapping, paper: Mapping, groups: Optional[Sequence[Sequence]] = None,
                      p_value: Optional[Callable[[object, object], float]] = None) -> Ordering:
    """Compare the ranking of ``ours`` and ``paper`` (key -> value) within each group of keys.

    For every pair of keys in a group that both have values and that the paper
    orders strictly (equal paper values are skipped), the pair agrees when ours
    orders it the same way; otherwise it is flipped (or tied when our values
    are equal). ``groups`` defaults to one group of all keys. With ``p_value``
    (two keys -> p-value of the difference of our means, e.g. from
    :func:`seed_test`), a pair also counts as significant when p < ALPHA.
    """
    groups = [list(ours)] if groups is None else [list(g) for g in groups]
    res = Ordering(with_test=p_value is not None)
    for group in groups:
        keys = [k for k in group if k in ours and k in paper]
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                if paper[a] == paper[b]:
                    continue
                hi, lo = (a, b) if paper[a] > paper[b] else (b, a)
                res.pairs += 1
                p = p_value(hi, lo) if p_value is not None else None
                significant = p is not None and p < ALPHA  # nan (no spread) is False
                if ours[hi] > ours[lo]:
                    res.agree += 1
                    res.agree_significant += significant
                elif ours[hi] == ours[lo]:
                    res.tied.append((hi, lo, paper[hi], paper[lo], ours[hi], ours[lo], p))
                else:
                    res.flipped.append((hi, lo, paper[hi], paper[lo], ours[hi], ours[lo], p))
                    res.flipped_significant += significant
        if keys and len({paper[k] for k in keys}) > 1:
            best_p = max(keys, key=lambda k: paper[k])
            best_o = max(keys, key=lambda k: ours[k])
            unique = sum(ours[k] == ours[best_o] for k in keys) == 1
            res.best_paper.append((best_p, best_o if unique else None))
    return res


def _label(key) -> str:
    if isinstance(key, tuple):
        return " / ".join(str(k) for k in key)
    return str(key)


def pair_label(hi, lo) -> str:
    """``("Step 4", "A"), ("Step 4", "B")`` -> ``"Step 4: A vs B"``; other keys joined with " / "."""
    if isinstance(hi, tuple) and isinstance(lo, tuple) and len(hi) == len(lo) == 2 and hi[0] == lo[0]:
        return f"{hi[0]}: {hi[1]} vs {lo[1]}"
    return f"{_label(hi)} vs {_label(lo)}"


def ordering_sentence(res: Ordering, max_listed: int = 4, paper_values: bool = True) -> str:
    """One sentence saying whether the paper's ordering held, naming the flipped (and tied) pairs."""
    if res.pairs == 0:
        return "No pair of cells is ordered by the paper and present in ours, so no ordering is compared."
    best_same = sum(p == o for p, o in res.best_paper)
    best = (f"; the paper's best cell is also our (strictly) best in {best_same} of {len(res.best_paper)} "
            f"group(s)" if res.best_paper else "")
    if res.with_test:
        best += (f"; significant at {ALPHA:g} over the seeds: {res.agree_significant} of the {res.agree} "
                 f"agreeing and {res.flipped_significant} of the {len(res.flipped)} flipped pair(s)")
    if res.agree == res.pairs:
        return f"The paper's ordering held: all {res.pairs} compared pair(s) are in the same order{best}."

    def pair_text(t):
        hi, lo, p_hi, p_lo, o_hi, o_lo, p = t
        paper = f"paper {p_hi:g} > {p_lo:g}" if paper_values else "higher in the paper"
        test = f", p = {p:.2g}" if p is not None and p == p else ""
        return f"{pair_label(hi, lo)} ({paper}, ours {o_hi:.4g} {'=' if o_hi == o_lo else '<'} {o_lo:.4g}{test})"

    # the most certain flips first; untested or untestable (nan) ones keep their order after them
    flips = sorted(res.flipped + res.tied, key=lambda t: t[6] if t[6] is not None and t[6] == t[6] else 2.0)
    listed = [pair_text(t) for t in flips[:max_listed]]
    more = len(flips) - len(listed)
    kinds = " and ".join(k for k, n in (("flipped", len(res.flipped)), ("tied", len(res.tied))) if n)
    return (f"The paper's ordering held in {res.agree} of {res.pairs} compared pair(s); "
            f"{kinds}: {', '.join(listed)}{f' and {more} more' if more > 0 else ''}{best}.")


def order_groups(spec: TableSpec, keys: Iterable[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    keys = list(keys)
    if spec.order == "all":
        return [keys]
    return [[k for k in keys if k[0] == row] for row in spec.rows]


def seed_test(stats: Mapping, per_seed: Optional[Mapping] = None) -> Optional[Callable[[object, object], float]]:
    """A two-sided p-value for the difference of two cells' means over seeds, or None without spreads.

    Cells that share seeds (every method of a sweep uses the same split and initialisation for a
    seed) get a paired t-test on the per-seed values ``per_seed[cell][seed]``; otherwise Welch's
    t-test from ``stats[cell] = (mean, std, n)``. Needs ``n >= 2``; no spread at all gives nan.
    """
    from scipy import stats as st

    per_seed = per_seed or {}
    if not all(isinstance(v, tuple) and len(v) > 2 and v[2] >= 2 for v in stats.values()):
        return None

    def p_value(a, b) -> float:
        va, vb = per_seed.get(a, {}), per_seed.get(b, {})
        common = sorted(set(va) & set(vb))
        if len(common) >= 2:
            diffs = [va[s] - vb[s] for s in common]
            if all(d == diffs[0] for d in diffs):
                return 0.0 if diffs[0] else float("nan")  # a constant, non-zero difference is certain
            return float(st.ttest_rel([va[s] for s in common], [vb[s] for s in common]).pvalue)
        (ma, sa, na), (mb, sb, nb) = stats[a][:3], stats[b][:3]
        if sa == sb == 0:
            return 0.0 if ma != mb else float("nan")
        return float(st.ttest_ind_from_stats(ma, sa, na, mb, sb, nb, equal_var=False).pvalue)

    return p_value


def cell_means(ours: Mapping) -> dict:
    """``ours`` with each cell's ``(mean, std, n)`` (or plain mean) reduced to its mean."""
    return {k: (v[0] if isinstance(v, tuple) else float(v)) for k, v in ours.items()}


def table_ordering(spec: TableSpec, ours: Mapping, numbers: Iterable[PaperNumber],
                   per_seed: Optional[Mapping] = None) -> tuple[Ordering, str]:
    """The ordering comparison of one table: our cells vs the paper's numbers (or stated claims).

    ``ours`` maps cells to means or to ``(mean, std, n)``; with the latter each pair is also tested
    against seed noise (:func:`seed_test`, paired where ``per_seed`` has the cells' per-seed values).
    """
    p_value = seed_test(ours, per_seed)
    ours = cell_means(ours)
    if spec.paper_claims:
        paper, ours_sub, groups = {}, {}, []
        for hi, lo, _quote in spec.paper_claims:
            paper[hi], paper[lo] = 1.0, 0.0
            groups.append([hi, lo])
        for k in paper:
            if k in ours:
                ours_sub[k] = ours[k]
        res = compare_orderings(ours_sub, paper, groups, p_value)
        return res, ordering_sentence(res, paper_values=False)
    pc = paper_cells(numbers, spec)
    paper = {k: v.value for k, v in pc.items()}
    ours_acc = {k: v for k, v in ours.items() if k[0] in spec.rows and k[1] in spec.columns}
    res = compare_orderings(ours_acc, paper, order_groups(spec, ours_acc), p_value)
    return res, ordering_sentence(res)


def paired_column_tests(spec: TableSpec, ours: Mapping, per_seed: Optional[Mapping] = None) -> list[tuple]:
    """For each of ``spec.paired_columns`` in each row where both cells exist: ``(row, a, b, mean(a) - mean(b),
    p)``, p two-sided from :func:`seed_test` (paired over shared seeds; None without spreads)."""
    p_value = seed_test(ours, per_seed)
    means = cell_means(ours)
    out = []
    for row in spec.rows:
        for a, b in spec.paired_columns:
            if (row, a) in means and (row, b) in means:
                p = p_value((row, a), (row, b)) if p_value is not None else None
                out.append((row, a, b, means[(row, a)] - means[(row, b)], p))
    return out


def paired_sentence(tests: Sequence[tuple]) -> str:
    """``Step 2: B - A = +1.20 (p = 0.03); ...``, one entry per :func:`paired_column_tests` result."""
    if not tests:
        return "No pair of the compared columns has both cells in ours."
    parts = [f"{row}: {a} - {b} = {diff:+.2f}" + (f" (p = {p:.2g})" if p is not None and p == p else "")
             for row, a, b, diff, p in tests]
    return "; ".join(parts) + "."
