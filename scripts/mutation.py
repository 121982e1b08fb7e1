"""Mutation testing of the four methods with mutmut 3, and the report docs/testing.md.

    python scripts/mutation.py run [--module functional/quantization] [--resume] [--tests tests/a.py,tests/b.py]
    python scripts/mutation.py recheck --module functional/quantization  # survivors again, current tests
    python scripts/mutation.py recheck --rebuild --module functional/quantization  # the same in a fresh clone
    python scripts/mutation.py recheck --module strategies/edge --add-tests tests/test_mutants_edge_strategy.py
    python scripts/mutation.py report
    python scripts/mutation.py tests functional/quantization   # the test files a module's run uses

``run`` mutates one module at a time in a scratch copy of the package
(``.mutation/<module>/``, git-ignored): mutmut's stats pass runs only the test
files that name the module or one of its public functions/classes, and each
mutant then runs only the tests that executed the mutated function. Every
module's outcome is written to ``docs/mutation/<module>.json`` (each mutant:
function, the changed line before/after, status), from which ``report``
writes ``docs/testing.md``: per module the mutants generated, killed,
survived, timed out and the score, and every survivor with its entry in
``tests/mutation_survivors.toml`` (equivalent, with the reason) or marked
open. Run it at low priority: ``nice -n 15 make mutation [MODULE=...]``.

``--tests`` replaces the test files a module's run would select by name with
the given ones (a module whose name-selected files include slow end-to-end
tests can be checked by its own fast files); the report lists the files used,
and ``recheck`` reuses them.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tokenize
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "avalanche_sst"
SCRATCH = ROOT / ".mutation"
RESULTS = ROOT / "docs" / "mutation"
REPORT = ROOT / "docs" / "testing.md"
SURVIVORS_FILE = ROOT / "tests" / "mutation_survivors.toml"

# The modules of the issue's scope: the functional core, the four methods' plugins and
# strategies, the quantized model, the benchmarks' splits and the scores/cost metrics.
MODULES = (
    *(f"functional/{p.stem}" for p in sorted((ROOT / PACKAGE / "functional").glob("[!_]*.py"))),
    "plugins/sst", "plugins/reinit", "plugins/msl", "plugins/m2kd", "plugins/edge_kt",
    "strategies/multi_step_sst", "strategies/aod", "strategies/m2kd", "strategies/ada_qpacknet",
    "strategies/edge", "models/quantized_multitask",
    "benchmarks/same_class", "benchmarks/scenarios", "benchmarks/class_split",
    "metrics/scores", "metrics/cost",
)
# Status of each mutmut exit code (mutmut.stats.status_by_exit_code, summarised).
STATUS = {1: "killed", 3: "killed", 0: "survived", 36: "timeout", 24: "timeout", -24: "timeout",
          152: "timeout", 255: "timeout", 5: "no tests", 33: "no tests", 34: "skipped", 37: "killed",
          None: "not checked"}
PYTEST_ARGS = ["-p", "no:cacheprovider", "-p", "no:warnings", "-x", "-q"]


def module_id(module: str) -> str:
    """``functional/quantization`` (also accepts ``avalanche_sst/functional/quantization.py``)."""
    m = module.strip().removeprefix(f"{PACKAGE}/").removesuffix(".py").replace(".", "/")
    return m.removeprefix(f"{PACKAGE}/")


def select_modules(wanted: str | None) -> list[str]:
    """``wanted``: a module, a folder (``functional``) or a comma-separated list of them; None: all."""
    if not wanted:
        return list(MODULES)
    chosen: list[str] = []
    for part in wanted.split(","):
        m = module_id(part)
        found = [x for x in MODULES if x == m or x.startswith(m.rstrip("/") + "/")]
        if not found:
            raise SystemExit(f"MODULE={part!r} is not in the mutation scope; pick one of: {', '.join(MODULES)} "
                             f"(or a folder such as functional)")
        chosen += [x for x in found if x not in chosen]
    return chosen


def public_names(source: str) -> list[str]:
    tree = ast.parse(source)
    return [n.name for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")]


def code_names(text: str) -> set[str]:
    """The identifiers in a test file's code, not the words of its strings and comments: a variant
    string such as ``"sst:adaptive_weights=False"`` does not make a file a test of ``adaptive_weights``
    (it pulled the paper-table pipeline, whose module fixture outlasts mutmut's timeout, into losses)."""
    try:
        return {t.string for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.NAME}
    except (tokenize.TokenError, SyntaxError):
        return set(re.findall(r"\w+", text))


def covering_test_files(module: str, tests: dict[str, str], source: str) -> list[str]:
    """Test files that import the package and name the module's dotted path or, in their code,
    one of its public functions/classes."""
    dotted = f"{PACKAGE}.{module.replace('/', '.')}"
    names = set(public_names(source))
    imports = re.compile(rf"^\s*(from|import) {PACKAGE}\b", re.MULTILINE)
    return sorted(name for name, text in tests.items() if imports.search(text)
                  and (dotted in text or names & code_names(text)))


def test_files_for(module: str) -> list[str]:
    tests = {p.name: p.read_text() for p in sorted((ROOT / "tests").glob("test_*.py"))}
    source = (ROOT / PACKAGE / f"{module}.py").read_text()
    return [f"tests/{name}" for name in covering_test_files(module, tests, source)]


def mutmut_config(module: str, test_files: list[str]) -> str:
    quoted = lambda xs: "[" + ", ".join(json.dumps(x) for x in xs) + "]"  # noqa: E731
    return (f"[tool.mutmut]\nsource_paths = [\"{PACKAGE}\"]\n"
            f"only_mutate = [\"{PACKAGE}/{module}.py\"]\n"
            f"pytest_add_cli_args_test_selection = {quoted(test_files)}\n"
            f"pytest_add_cli_args = {quoted(PYTEST_ARGS)}\n"
            f"also_copy = {quoted(list(ALSO_COPY))}\n"
            "use_git_change_detection = false\n\n"
            "[tool.pytest.ini_options]\ntestpaths = [\"tests\"]\n")


#: What tests read besides the package and tests/ (the CLI scripts, benchmark helpers, the papers'
#: numbers under docs/, the README's example): mutmut copies these into its run folder too, or those
#: tests fail before any mutant runs.
ALSO_COPY = ("experiments", "benchmarks", "scripts", "docs", "README.md")


def prepare(module: str, test_files: list[str], resume: bool) -> Path:
    work = SCRATCH / module.replace("/", ".")
    if work.exists() and not resume:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in (PACKAGE, "tests", *ALSO_COPY):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, work / name)
            continue
        shutil.rmtree(work / name, ignore_errors=True)
        shutil.copytree(ROOT / name, work / name, ignore=ignore)
    (work / "pyproject.toml").write_text(mutmut_config(module, test_files))
    return work


def _mutmut(module: str, work: Path, names: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # mutmut puts its copy first
    env.setdefault("OMP_NUM_THREADS", "1")
    with open(work / "mutmut.log", "a") as log:
        proc = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", "1", *names], cwd=work,
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = (work / "mutmut.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"mutmut failed on {module} (exit {proc.returncode}); log {work / 'mutmut.log'}:\n{tail}")


def _record(module: str, work: Path, test_files: list[str], previous: dict | None = None,
            rerun: tuple = (), chosen: bool = False) -> dict:
    """Write the module's result; with ``previous`` (a recheck), mutants not in ``rerun`` keep
    their earlier status (mutmut resets them when its configuration changes). ``chosen``: the
    test files were given (``--tests``), not selected by name."""
    result = collect(module, work, test_files)
    if chosen:
        result["tests_chosen"] = True
    if previous is not None:
        merge_statuses(result, previous, rerun)
        result["rechecked"] = {"mutants": len(rerun), "date": result["date"], "first_run": previous.get("date")}
        result["commit"], result["date"] = previous.get("commit", result["commit"]), previous.get("date", result["date"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{module.replace('/', '.')}.json").write_text(json.dumps(result, indent=1) + "\n")
    counts = Counter(m["status"] for m in result["mutants"])
    print(f"[mutation] {module}: {len(result['mutants'])} mutants, {dict(counts)}", flush=True)
    return result


def merge_statuses(result: dict, previous: dict, rerun: tuple) -> dict:
    """Mutants not in ``rerun`` take their status from ``previous`` (in place; returns ``result``)."""
    before = {m["name"]: m["status"] for m in previous["mutants"]}
    for m in result["mutants"]:
        if m["name"] not in rerun and m["name"] in before:
            m["status"] = before[m["name"]]
    return result


def chosen_test_files(tests: str | None, option: str = "--tests") -> list[str] | None:
    """``tests/a.py,tests/b.py`` -> the list, each checked to exist; None -> None (select by name)."""
    if not tests:
        return None
    files = [t.strip() for t in tests.split(",") if t.strip()]
    missing = [t for t in files if not (ROOT / t).is_file()]
    if missing or not files:
        raise SystemExit(f"{option}: no such test file {', '.join(missing) or repr(tests)}; give paths such as "
                         f"tests/test_settings.py, comma-separated")
    return files


def run_module(module: str, resume: bool, tests: list[str] | None = None) -> dict:
    test_files = tests or test_files_for(module)
    if not test_files:
        raise SystemExit(f"no test file names {module}: add tests before mutating it")
    work = prepare(module, test_files, resume)
    (work / "mutmut.log").unlink(missing_ok=True)
    print(f"[mutation] {module}: tests {' '.join(test_files)}", flush=True)
    _mutmut(module, work, [])
    return _record(module, work, test_files, chosen=bool(tests))


def recheck_module(module: str, rebuild: bool = False, add_tests: list[str] | None = None) -> dict:
    """Run the survivors (and timeouts) of the module's last run again against the current tests.

    Mutants not checked yet (an interrupted run) stay so; the source must be the one mutated.
    ``rebuild``: mutmut's scratch state (``.mutation/``, git-ignored) is missing, as in a fresh
    clone: make it afresh and run only the recorded non-killed mutants (mutmut names mutants by
    function and position, the same for the same source), provided the module's source equals
    the one at the recorded run's commit. ``add_tests``: test files written since that run (say
    ``tests/test_mutants_<module>.py``) added to the files the survivors run against; the record
    then lists them, as a run with ``--tests`` does."""
    work = SCRATCH / module.replace("/", ".")
    path = f"{PACKAGE}/{module}.py"
    recorded = RESULTS / f"{module.replace('/', '.')}.json"
    if not recorded.exists():
        raise RuntimeError(f"no earlier run of {module} recorded: run `make mutation MODULE={module}` first")
    previous = json.loads(recorded.read_text())
    test_files = previous["tests"] if previous.get("tests_chosen") else test_files_for(module)
    test_files = test_files + [t for t in add_tests or [] if t not in test_files]
    chosen = bool(previous.get("tests_chosen") or add_tests)
    if rebuild:
        if not source_unchanged_since(path, previous.get("commit", "")):
            raise RuntimeError(f"{path} differs from the one of its recorded run (commit {previous.get('commit')}): "
                               f"run `make mutation MODULE={module}` again")
        work = prepare(module, test_files, resume=False)
    else:
        if not (work / "mutants" / f"{path}.meta").exists():
            raise RuntimeError(f"no mutmut state of {module} in {work}: run `scripts/mutation.py recheck --rebuild "
                               f"--module {module}` (or `make mutation MODULE={module}`)")
        if (work / path).read_text() != (ROOT / path).read_text():
            raise RuntimeError(f"{path} changed since its mutation run: run `make mutation MODULE={module}` again")
        shutil.rmtree(work / "tests")
        shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (work / "pyproject.toml").write_text(mutmut_config(module, test_files))
    names = [m["name"] for m in previous["mutants"] if m["status"] not in ("killed", "not checked")]
    print(f"[mutation] {module}: rechecking {len(names)} mutants against {' '.join(test_files)}", flush=True)
    if names:
        _mutmut(module, work, names)
    return _record(module, work, test_files, previous, tuple(names), chosen=chosen)


def source_unchanged_since(path: str, commit: str) -> bool:
    """Whether ``path`` in the working tree equals its version at ``commit``."""
    if not commit or commit == "unknown":
        return False
    out = subprocess.run(["git", "diff", "--quiet", commit, "--", path], cwd=ROOT, capture_output=True)
    return out.returncode == 0


def changed_lines(diff: str) -> tuple[str, str]:
    """The removed and added lines of a mutant's diff, stripped and joined (its stable description)."""
    minus = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    plus = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    return " / ".join(minus), " / ".join(plus)


def function_of(mutant_name: str) -> str:
    """``avalanche_sst.x.y.xǁClassǁmethod__mutmut_3`` -> ``Class.method``; ``x_func__mutmut_3`` -> ``func``."""
    tail = mutant_name.rsplit("__mutmut_", 1)[0].rsplit(".", 1)[-1]
    if tail.startswith("xǁ"):
        return ".".join(p for p in tail[2:].split("ǁ") if p)
    return tail[2:] if tail.startswith("x_") else tail


def collect(module: str, work: Path, test_files: list[str]) -> dict:
    """Every mutant's status and description, read from mutmut's state in ``work``."""
    path = f"{PACKAGE}/{module}.py"
    meta = json.loads((work / "mutants" / f"{path}.meta").read_text())
    old_cwd = os.getcwd()
    os.chdir(work)
    try:
        from mutmut.mutation.diff_apply import get_diff_for_mutant

        mutants = []
        for name, code in sorted(meta["exit_code_by_key"].items(), key=lambda kv: _natural(kv[0])):
            before, after = changed_lines(get_diff_for_mutant(name, path=Path(path)))
            mutants.append({"name": name, "function": function_of(name), "before": before, "after": after,
                            "status": STATUS.get(code, "suspicious")})
    finally:
        os.chdir(old_cwd)
    return {"module": module, "tests": test_files, "mutmut": _version("mutmut"), "commit": _git_head(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "mutants": mutants}


def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def _git_head() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


# ---------------------------------------------------------------- the report


def load_survivor_notes(path: Path = SURVIVORS_FILE) -> dict[tuple, dict]:
    """``{(module, function, before, after): entry}`` of the reviewed survivors file."""
    if not path.exists():
        return {}
    data = tomllib.loads(path.read_text())
    notes = {}
    for entry in data.get("equivalent", []):
        key = (module_id(entry["module"]), entry["function"], entry["before"], entry["after"])
        notes[key] = entry
    return notes


def summarise(result: dict, notes: dict[tuple, dict]) -> dict:
    """Counts and score of one module: killed / (checked - equivalent); an interrupted run's
    unchecked mutants are counted apart, not as survivors."""
    counts = Counter(m["status"] for m in result["mutants"])
    survivors = [m for m in result["mutants"] if m["status"] not in ("killed", "not checked")]
    equivalent = [m for m in survivors if _key(result["module"], m) in notes]
    generated, unchecked = len(result["mutants"]), counts["not checked"]
    judged = generated - unchecked - len(equivalent)
    other = generated - unchecked - counts["killed"] - counts["survived"] - counts["timeout"]
    return {"generated": generated, "not_checked": unchecked, "killed": counts["killed"],
            "survived": counts["survived"], "timeout": counts["timeout"], "other": other,
            "equivalent": len(equivalent), "score": counts["killed"] / judged if judged else 1.0,
            "open": [m for m in survivors if _key(result["module"], m) not in notes],
            "equivalent_mutants": equivalent}


def _key(module: str, mutant: dict) -> tuple:
    return (module, mutant["function"], mutant["before"], mutant["after"])


def target(module: str) -> float:
    return 0.95 if module.startswith("functional/") else 0.90


def render(results: list[dict], notes: dict[tuple, dict]) -> str:
    lines = ["# Mutation testing", "",
             "Generated by `make mutation` (`scripts/mutation.py report`) from `docs/mutation/*.json`; do not edit.",
             "Each module is mutated by mutmut and its mutants run against the test files that name it.",
             "Score = killed / (checked - equivalent); targets: 95% in `functional/`, 90% elsewhere.",
             "A run stopped before the end leaves mutants not checked: its score covers the checked ones only.",
             "Survivors are listed as equivalent (reason in `tests/mutation_survivors.toml`) or open.", "",
             "Reproduce one module: `nice -n 15 make mutation MODULE=functional/quantization`; rerun its survivors "
             "after adding tests: `python scripts/mutation.py recheck --module functional/quantization` (add "
             "`--rebuild` in a fresh clone, which has no `.mutation/` state; `--add-tests tests/test_new.py` when "
             "a module run with `--tests` needs a test file written since). A module run with `--tests` lists "
             "the test files it was given.", "",
             "| module | generated | not checked | killed | survived | timed out | other | equivalent | score | target "
             "| run |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    summaries = {r["module"]: summarise(r, notes) for r in results}
    for r in results:
        s = summaries[r["module"]]
        mark = "met" if s["score"] >= target(r["module"]) else "**below**"
        mark += f", partial: {s['not_checked']} not checked" if s["not_checked"] else ""
        when = f"{r['commit']}, {r['date']}" + (f"; survivors rechecked {r['rechecked']['date']}"
                                                if r.get("rechecked") else "")
        lines.append(f"| `{r['module']}` | {s['generated']} | {s['not_checked']} | {s['killed']} | {s['survived']} | "
                     f"{s['timeout']} | "
                     f"{s['other']} | {s['equivalent']} | {100 * s['score']:.1f}% | {100 * target(r['module']):.0f}% "
                     f"({mark}) | {when} |")
    missing = [m for m in MODULES if m not in summaries]
    if missing:
        lines += ["", "Not run yet: " + ", ".join(f"`{m}`" for m in missing) + "."]
    for r in results:
        s = summaries[r["module"]]
        if not s["open"] and not s["equivalent_mutants"]:
            continue
        lines += ["", f"## `{r['module']}`", "", f"Tests{' (given with `--tests`)' if r.get('tests_chosen') else ''}: "
                  f"{', '.join(f'`{t}`' for t in r['tests'])}.", ""]
        for m in s["equivalent_mutants"]:
            reason = notes[_key(r["module"], m)]["reason"]
            lines.append(f"- equivalent — `{m['function']}`: `{m['before']}` → `{m['after']}`: {reason}")
        for m in s["open"]:
            lines.append(f"- **open ({m['status']})** — `{m['function']}`: `{m['before']}` → `{m['after']}`")
    return "\n".join(lines) + "\n"


def write_report() -> Path:
    results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    order = {m: i for i, m in enumerate(MODULES)}
    results.sort(key=lambda r: order.get(r["module"], len(order)))
    REPORT.write_text(render(results, load_survivor_notes()))
    print(f"[mutation] wrote {REPORT.relative_to(ROOT)} ({len(results)} modules)")
    return REPORT


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="mutate the scope (or --module) and record docs/mutation/<module>.json")
    run.add_argument("--module", default=None, help="one module or folder, e.g. functional/quantization")
    run.add_argument("--resume", action="store_true", help="keep mutmut's state of an interrupted run")
    run.add_argument("--tests", default=None,
                     help="comma-separated test files to use instead of those that name the module")
    recheck = sub.add_parser("recheck", help="run the last run's survivors again against the current tests")
    recheck.add_argument("--module", required=True, help="one module or folder, e.g. functional/quantization")
    recheck.add_argument("--rebuild", action="store_true",
                         help="no mutmut state here (a fresh clone): make it afresh, rerun only the recorded survivors")
    recheck.add_argument("--add-tests", default=None,
                         help="comma-separated test files written since the run, added to those the survivors run against")
    sub.add_parser("report", help="write docs/testing.md from docs/mutation/*.json")
    tests = sub.add_parser("tests", help="print the test files a module's run uses")
    tests.add_argument("module")
    args = parser.parse_args(argv)
    if args.command in ("run", "recheck"):
        failed = []
        for module in select_modules(args.module):
            try:
                if args.command == "run":
                    run_module(module, args.resume, chosen_test_files(args.tests))
                else:
                    recheck_module(module, args.rebuild, chosen_test_files(args.add_tests, "--add-tests"))
            except RuntimeError as err:  # the other modules still run; the report says what was reached
                print(f"[mutation] {err}", file=sys.stderr, flush=True)
                failed.append(module)
        write_report()
        if failed:
            raise SystemExit(f"not finished: {', '.join(failed)} (see the messages above)")
    elif args.command == "report":
        write_report()
    else:
        for module in select_modules(args.module):
            print(module, " ".join(test_files_for(module)))


if __name__ == "__main__":
    main()
