"""Copy preflight forecasts (``<out>/preflight.md`` of ``paper_tables.py --preflight``) into
docs/paper-tables.md between their markers, and keep a copy under docs/runs/preflight/.

    python experiments/publish_preflight.py forecast=results/forecast cpu=results/preflight/table3 ...

Each ``NAME=FOLDER`` names a section: ``forecast`` (the ``--forecast-only`` output of every table)
goes between ``<!-- preflight-forecast:start/end -->``; every other name is appended, in order,
between ``<!-- preflight-runs:start/end -->``. ``NAME=FILE.md`` takes a preflight.md file itself, e.g.
the copy kept from an earlier publication (``table3=docs/runs/preflight/table3.md``), so the sections
not rerun stay. A FOLDER with only ``preflight.json`` (a preflight stopped midway) gives the runs it
finished. Numbers are never typed into the docs: rerun the producing commands (written in each
file), then this.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
from update_readme import splice  # noqa: E402

from avalanche_sst.experiments.preflight import read_results_json, run_line  # noqa: E402


def _preflight_md(source: str) -> Path:
    path = Path(source)
    return path if path.suffix == ".md" else path / "preflight.md"


def main(argv=None) -> int:
    items = [a.partition("=") for a in (sys.argv[1:] if argv is None else argv)]
    bad = [name for name, eq, folder in items
           if not eq or not (_preflight_md(folder).exists() or (Path(folder) / "preflight.json").exists())]
    if bad or not items:
        raise SystemExit(f"give NAME=FOLDER pairs whose FOLDER holds preflight.md, or NAME=FILE.md (bad: {bad})")
    doc = ROOT / "docs" / "paper-tables.md"
    keep = ROOT / "docs" / "runs" / "preflight"
    keep.mkdir(parents=True, exist_ok=True)
    runs = []
    text = doc.read_text()
    for name, _, folder in items:
        md = _preflight_md(folder)  # absent: a preflight stopped before its end, which lists the runs it finished
        body = md.read_text() if md.exists() else "Stopped before its end: no forecast.\n"
        if "\nRuns:\n" not in body and (Path(folder) / "preflight.json").exists():  # or written before runs were listed
            body += "\nRuns (from preflight.json):\n\n" + "".join(
                f"- `{run_line(r)}`\n" for r in read_results_json(Path(folder) / "preflight.json"))
        (keep / f"{name}.md").write_text(body)
        if name == "forecast":
            text = splice(text, "preflight-forecast", body)
        else:
            runs.append(f"#### {name}\n\n{body}")
    if runs:
        text = splice(text, "preflight-runs", "\n".join(runs))
    doc.write_text(text)
    print(f"updated {doc.relative_to(ROOT)} from {len(items)} preflight file(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
