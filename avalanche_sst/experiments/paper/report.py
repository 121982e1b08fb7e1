"""The report (``docs/results.md``) from the tables' written files and the papers' numbers.

:func:`write_report` turns ``<results>/*/<table>.csv`` and
``docs/paper_numbers.csv`` into ``docs/results.md``: per table, our table,
the paper's numbers, the command, seeds and times, and one generated sentence
on whether the paper's ordering held (:func:`~.stats.table_ordering`), and the
commit(s) its runs came from (a table whose runs lack their cost or commit
raises :class:`~avalanche_sst.experiments.provenance.StaleRunsError`); tables
are grouped by paper (a heading per paper once more than one has tables).
:func:`archive_tables` copies the generated files (no checkpoints) next to it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from pathlib import Path
from typing import Mapping, Optional, Sequence

from avalanche_sst.experiments.paper.fig3 import FIG3_KEYS
from avalanche_sst.experiments.paper.formatting import (markdown, models_text, read_runs_csv, read_table_csv,
                                                        scenario_of)
from avalanche_sst.experiments.paper.runner import default_command
from avalanche_sst.experiments.paper.fairness import SECTION_TITLE, fairness_section
from avalanche_sst.experiments.paper.specs import (LAST_STEP, PAPERS, TABLES, TableSpec, resolve_overrides,
                                                   sweep_dirname, tables_by_paper)
from avalanche_sst.experiments.paper.stats import (ALPHA, PaperNumber, load_paper_numbers, paired_column_tests,
                                                 paired_sentence, paper_cells, table_ordering)
from avalanche_sst.experiments.provenance import check_provenance, provenance_text
from avalanche_sst.experiments.tables import executor_text


def cpu_seconds(table_dir: Path) -> float:
    """Sum of the runs' seconds over every ``runs.csv`` under ``table_dir`` (one value per run)."""
    total = 0.0
    for path in sorted(Path(table_dir).rglob("runs.csv")):
        total += sum({(r["method"], r["seed"]): r["seconds"] for r in read_runs_csv(path)}.values())
    return total


def table_runs(table_dir: Path, meta: Mapping) -> list[dict]:
    """Rows of every ``runs.csv`` a table was made from: its sweeps' (``meta["sweeps"]``, relative to its folder)."""
    table_dir = Path(table_dir)
    rows = []
    for folder in [table_dir / s for s in meta.get("sweeps", [])] or [table_dir]:
        if (folder / "runs.csv").exists():
            rows += read_runs_csv(folder / "runs.csv")
    return rows


def checked_commits(table_id: str, table_dir: Path, meta: Mapping, command: str) -> str:
    """The commit(s) a table's runs came from; a :class:`StaleRunsError` (naming the table and
    ``command``) when any run lacks its training cost or commit."""
    runs = table_runs(table_dir, meta)
    check_provenance(runs, table_id, command)
    return provenance_text(runs)


def our_cells(spec: TableSpec, table_dir: Path) -> dict[tuple[str, str], tuple]:
    """Our cells as ``(mean, std, n)`` at full precision from ``<table>.json``, else ``(mean, std)`` from the CSV."""
    meta_path = Path(table_dir) / f"{spec.id}.json"
    if meta_path.exists():
        cells = json.loads(meta_path.read_text()).get("cells")
        if cells:
            return {(c["row"], c["col"]): (c["mean"], c["std"], c["n"]) for c in cells}
    return read_table_csv(Path(table_dir) / f"{spec.id}.csv")[1]


def seed_values(spec: TableSpec, table_dir: Path, preset_name: str) -> dict[tuple[str, str], dict[int, float]]:
    """Each cell's value per seed, read back from the runs' CSVs: ``{(row, col): {seed: value}}``."""
    table_dir = Path(table_dir)
    out: dict[tuple[str, str], dict[int, float]] = {}
    if spec.kind == "fig3":
        path = table_dir / "fig3_means.csv"
        if not path.exists():
            return out
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                for col, (key, scale) in FIG3_KEYS.items():
                    out.setdefault((r["network"], col), {})[int(r["seed"])] = scale * float(r[key])
        return out
    meta_path = table_dir / f"{spec.id}.json"
    if meta_path.exists():  # tables written since per-seed values are recorded: any cell's score
        recorded = json.loads(meta_path.read_text()).get("cell_seeds")
        if recorded is not None:
            return {(e["row"], e["col"]): {int(k): float(v) for k, v in e["values"].items()} for e in recorded}
    runs: dict[str, list[dict]] = {}
    last: dict[str, dict] = {}  # per sweep: (method, seed) -> its last step, for cells at LAST_STEP
    for c in spec.cells:
        name = sweep_dirname(resolve_overrides(c, preset_name))
        if name not in runs:
            path = table_dir / name / "runs.csv"
            runs[name] = read_runs_csv(path) if path.exists() else []
            last[name] = {}
            for r in runs[name]:
                key = (r["method"], r["seed"])
                last[name][key] = max(last[name].get(key, 0), r["step"])
        for r in runs[name]:
            step = last[name][r["method"], r["seed"]] if c.step == LAST_STEP else c.step
            if r["method"] == c.method and r["step"] == step:
                out.setdefault((c.row, c.col), {})[r["seed"]] = 100.0 * r["top1"]
    return out


def time_text(meta: Mapping, table_dir: Path) -> str:
    """The table's time: its command's wall clock and process CPU time when recorded, else the runs' sum."""
    parts = []
    if "wall_seconds" in meta:
        n = len(meta.get("invocations", ()))
        if "workers" in meta:
            shared = executor_text(meta["workers"], meta.get("threads_per_run"))
        else:  # tables written before the executor was recorded: the table process's own threads
            shared = f" on {meta['threads']} thread(s)" if meta.get("threads") else ""
        parts.append(f"wall time {meta['wall_seconds']:.0f} s{shared}" + (f" over {n} invocations" if n > 1 else ""))
    if "cpu_seconds" in meta:
        elsewhere = meta.get("workers", 1) > 1  # Ray workers' CPU time is not the table process's
        parts.append(f"process CPU time {meta['cpu_seconds']:.0f} s"
                     + (" (the table process only: its runs ran in Ray workers)" if elsewhere else ""))
    runs = cpu_seconds(table_dir)
    if runs:
        parts.append(f"sum of the runs' own seconds {runs:.0f} s")
    return "; ".join(parts) or "time not recorded"


_SECTION = re.compile(r"^## (\w+): ")
_CODE = re.compile(r"Code: commit\(s\) (.+?)\.(?:\s|$)")


def report_sections(text: str) -> dict[str, tuple[list[str], Optional[str]]]:
    """Per table of an earlier report: its section's lines after the heading, and its summary row."""
    lines = text.split("\n")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| (\w+) \|.*$", text.split("\n# ")[0], re.M)}
    out = {}
    for i, line in enumerate(lines):
        match = _SECTION.match(line)
        if match:
            j = i + 1
            while j < len(lines) and not lines[j].startswith(("## ", "# ")):
                j += 1
            body = lines[i + 1:j]
            while body and not body[0]:
                body = body[1:]
            out[match.group(1)] = (body, rows.get(match.group(1)))
    return out


def paper_preambles(text: str) -> dict[str, list[str]]:
    """Per paper heading (``# Paper ...``) of an earlier report: the lines between it and its first table."""
    lines = text.split("\n")
    out = {}
    for i, line in enumerate(lines):
        if line.startswith("# Paper "):
            j = i + 1
            while j < len(lines) and not lines[j].startswith(("## ", "# ")):
                j += 1
            out[line] = [x for x in lines[i + 1:j]]
    return out


def after_fairness(text: str) -> str:
    """What an earlier report has after its fairness section (equal compute, data curve, overview, ...)."""
    lines = text.split("\n")
    if SECTION_TITLE not in lines:
        return ""
    start = lines.index(SECTION_TITLE) + 1
    rest = [i for i in range(start, len(lines)) if lines[i].startswith("## ")]
    return "\n".join(lines[rest[0]:]) if rest else ""


def section_commits(body: Sequence[str]) -> Optional[str]:
    """The commit(s) a table's section names (``Code: commit(s) ...``), None when it names none."""
    match = _CODE.search("\n".join(body))
    return match.group(1) if match else None


def commits_line(codes: Mapping[str, Optional[str]]) -> str:
    """One sentence: which tables come from which commit(s), and which from code older than commit recording."""
    by_code: dict[str, list[str]] = {}
    for table_id, code in codes.items():
        by_code.setdefault(code or "", []).append(table_id)
    fresh = "; ".join(f"{', '.join(ts)} from commit(s) {c}" for c, ts in by_code.items() if c)
    stale = by_code.get("", [])
    return (f"Code: {fresh or 'no table records its commit'}."
            + (f" From older code, with no commit recorded (their sections are the old ones; rerun the "
               f"command each names): {', '.join(stale)}." if stale else ""))


def archive_tables(results_root: str | Path, dest: str | Path, only: Optional[Sequence[str]] = None) -> list[Path]:
    """Copy each finished table's generated files (not its checkpoints or TensorBoard logs) to ``dest``.

    Per table: ``<table>.md/.csv/.json`` and figures; per sweep: its ``table.*``, ``runs.csv``,
    ``preset.json`` and ``accuracy.png``; ``only``: these tables alone. Returns the copied paths.
    """
    results_root, dest = Path(results_root), Path(dest)
    keep_sweep = {"table.md", "table.csv", "runs.csv", "preset.json", "accuracy.png"}
    copied = []
    for table_id in (TABLES if only is None else only):
        src = results_root / table_id
        if not (src / f"{table_id}.csv").exists():
            continue
        files = [f for f in src.iterdir() if f.is_file() and f.suffix in {".md", ".csv", ".json", ".png"}]
        files += [f for d in sorted(src.glob("sweep*")) if d.is_dir() for f in d.iterdir() if f.name in keep_sweep]
        for f in sorted(files):
            target = dest / f.relative_to(results_root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
            copied.append(target)
    return copied


def _csv_markdown(path: Path) -> str:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return markdown(rows[0], rows[1:])


def _paper_markdown(spec: TableSpec, pc: Mapping[tuple[str, str], PaperNumber]) -> Optional[str]:
    if not pc:
        return None
    rows = [r for r in dict.fromkeys(k[0] for k in pc)]
    cols = [c for c in dict.fromkeys(k[1] for k in pc)]
    body = []
    for r in rows:
        line = [r]
        for c in cols:
            p = pc.get((r, c))
            line.append("" if p is None else (f"{p.value:.2f} ± {p.std:.2f}" if p.std is not None else f"{p.value:g}"))
        body.append(line)
    return markdown([spec.corner, *cols], body)


def write_report(results_root: str | Path = "results/paper", paper_csv: str | Path = "docs/paper_numbers.csv",
                 out: str | Path = "docs/results.md", preset_name: str = "cpu",
                 figures_root: str | Path | None = None, only: Optional[Sequence[str]] = None) -> str:
    """Generate ``docs/results.md`` from the written tables and the paper's numbers.

    :param figures_root: where the tables' PNGs are linked from (e.g. the :func:`archive_tables`
        copy next to the report); default ``results_root``.
    :param only: regenerate only these tables; every other table keeps its section and summary row
        from the report already at ``out`` (e.g. after rerunning a few tables), and the header lists
        which tables come from which commit and which are older than commit recording.
    """
    results_root, out = Path(results_root), Path(out)
    if only is not None:
        unknown = [t for t in only if t not in TABLES]
        if unknown:
            raise ValueError(f"only: unknown table(s) {unknown}; choose from {list(TABLES)}")
        if not out.exists():
            raise ValueError(f"only: {out} does not exist, so the other tables have no sections to keep; "
                             f"generate the whole report first (without only / --tables)")
    earlier = report_sections(out.read_text()) if only is not None else {}
    preambles = paper_preambles(out.read_text()) if only is not None else {}
    codes: dict[str, Optional[str]] = {}  # table -> the commit(s) its section names (None: not recorded)
    figures_root = Path(figures_root) if figures_root is not None else results_root
    numbers = load_paper_numbers(paper_csv)
    groups = tables_by_paper()
    several = len(groups) > 1  # one paper: no per-paper headings, the report reads as it always did
    citations = "; ".join(PAPERS[paper].citation for paper in groups)
    whose = "papers'" if several else "paper's"
    header_lines = [
        f"# Results: the {whose} tables, reproduced in kind",
        "",
        "Generated by `python experiments/report.py` from "
        f"`{figures_root}/<table>/<table>.csv` and `{paper_csv}`; do not edit by hand.",
        "Our numbers: Top-1 % on the whole test set, mean ± std (sample std) over the seeds named. "
        "Times: the table command's wall clock and process CPU time (when recorded), summed over the "
        "invocations that wrote the table, and the sum of the runs' own seconds in their `runs.csv` "
        "(what reproducing the table costs; runs redone after a change count once). "
        f"{'Each' if several else 'The'} paper's numbers are its own ({citations}), on its datasets and networks; "
        "compare orderings, not values. A pair counts as significant when a paired t-test over the "
        f"seeds gives p < {ALPHA:g} (Welch's test where the cells share no seeds). "
        "Each table names the commit(s) of the code its runs came from; a table whose runs lack their "
        "training cost or that commit is refused, not shown (rerun its command).",
        "",
    ]
    summary = ["| Table | Pairs in the paper's order | Significant: agreeing / flipped | "
               "Paper's best is our best | Wall s | Process CPU s | Runs' own s |", "|---|---|---|---|---|---|---|"]
    sections = []
    for spec in [s for specs in groups.values() for s in specs]:
        table_id = spec.id
        lines = sections
        if several and spec is groups[spec.paper][0]:
            paper = PAPERS[spec.paper]
            heading = f"# Paper {paper.id}: {paper.citation}" + (f", {paper.title}" if paper.title else "")
            lines += [heading, *preambles.get(heading, [""])]
        lines += [f"## {table_id}: {spec.title}", ""]
        csv_path = results_root / table_id / f"{table_id}.csv"
        if only is not None and table_id not in only and (table_id in earlier or csv_path.exists()):
            body, row = earlier.get(table_id, ([f"Not in the earlier report: regenerate it (--tables {table_id}).",
                                                ""], None))
            lines += body
            summary += [row] if row else []
            codes[table_id] = section_commits(body)
            continue
        meta_path = results_root / table_id / f"{table_id}.json"
        pc = paper_cells(numbers, spec)
        if not csv_path.exists():
            lines += ["Not run yet. Run:", "", "```",
                      default_command(table_id, preset_name, spec.preset(preset_name).seeds, results_root),
                      "```", ""]
            continue
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        command = meta.get("command") or default_command(table_id, preset_name, spec.preset(preset_name).seeds,
                                                         results_root)
        commits = checked_commits(table_id, csv_path.parent, meta, command)
        codes[table_id] = commits
        print(f"{table_id}: runs from commit(s) {commits}")
        ours = our_cells(spec, csv_path.parent)
        lines += [
            f"Ours (preset `{meta.get('preset', '?')}`: {meta.get('dataset', '?')}, "
            f"{models_text(meta.get('models', {}))}, {scenario_of(meta)}, "
            f"seeds {meta.get('seeds', '?')}):",
            "",
            _csv_markdown(csv_path),
            "",
        ]
        paper_md = _paper_markdown(spec, pc)
        if paper_md:
            lines += [f"Paper ({spec.paper_source}, {spec.paper_setting}):", "", paper_md, ""]
        else:
            claims = "; ".join(dict.fromkeys(q for _, _, q in spec.paper_claims))  # a quote once
            lines += [f"Paper ({spec.paper_source}, {spec.paper_setting}): no numbers given. {claims}.", ""]
        per_seed = seed_values(spec, csv_path.parent, meta.get("preset", preset_name))
        res, sentence = table_ordering(spec, ours, numbers, per_seed)
        best = f"{sum(p == o for p, o in res.best_paper)} of {len(res.best_paper)}" if res.best_paper else "-"
        cpu = f"{meta['cpu_seconds']:.0f}" if "cpu_seconds" in meta else "not recorded"
        summary.append(f"| {table_id} | {res.agree} of {res.pairs} | {res.agree_significant} / "
                       f"{res.flipped_significant} | {best} | {meta.get('wall_seconds', float('nan')):.0f} | {cpu} | "
                       f"{cpu_seconds(csv_path.parent):.0f} |")
        lines += [
            f"Command: `{meta.get('command', '?')}`; seeds {meta.get('seeds', '?')}; {time_text(meta, csv_path.parent)}. "
            f"Code: commit(s) {commits}.",
            "",
            f"Ordering: {sentence}",
            "",
        ]
        if spec.paired_columns:
            tests = paired_column_tests(spec, ours, per_seed)
            lines += [f"Paired tests over the seeds (difference of means, a - b): {paired_sentence(tests)}", ""]
        figures = sorted((figures_root / table_id).rglob("*.png"))
        if figures:
            links = ", ".join(f"[{f.relative_to(figures_root / table_id).as_posix()}]"
                              f"({Path(os.path.relpath(f, out.parent)).as_posix()})" for f in figures)
            lines += [f"Figures: {links}.", ""]
    header_lines += [commits_line(codes), ""] if codes else []
    if len(summary) > 2:
        lines = header_lines + ["## Summary", ""] + summary + [""] + sections
    else:
        lines = header_lines + sections
    lines += ["", fairness_section([s for specs in groups.values() for s in specs], preset_name).rstrip("\n")]
    if only is not None and out.exists():  # the sections report.py appends after it stay as they were
        lines += ["", after_fairness(out.read_text())]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).rstrip("\n") + "\n"  # kept sections end in blanks too
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text
