"""Which code produced a run: the package version and the git commit it ran from.

Written into every sweep's ``preset.json`` and run's ``done.json`` (key
``"provenance"``) and into ``runs.csv`` (columns ``git_commit``, ``git_dirty``),
so a published number names the code that made it and ``experiments/report.py``
can refuse numbers older than the code (see :func:`check_provenance`).

The repository is found from this package's own file, not the working folder:
a sweep started from elsewhere still records the code that ran. Code outside
any git checkout (an installed wheel or sdist, a copied source tree such as
mutmut's) records, in place of the commit, ``no git checkout (avalanche-sst
<version>)`` (:func:`no_checkout_label`) and ``None`` for ``dirty``, never an
unrelated repository's commit; the report accepts such runs and names that
version, while a run with no ``git_commit`` at all predates provenance and is
refused. Tables published under ``docs/runs`` must name a real commit: the test
suite holds that rule (``tests/test_provenance.py``).
"""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Optional

from avalanche_sst.experiments.versions import package_version

#: The package's root folder (``.../avalanche_sst``); its parent is the checkout when run from one.
PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: Tracked files that are outputs, not code: the published tables and selection records under docs/,
#: which the commands themselves rewrite (a second selection in the same tree would otherwise call
#: its own code dirty). Changes there do not make a run's code dirty.
OUTPUT_PATHSPECS = (":(exclude,top)docs",)

#: How a run made outside any git checkout fills ``git_commit`` (see :func:`no_checkout_label`).
NO_CHECKOUT = "no git checkout"


def _git(repo: Path, *args: str) -> Optional[str]:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):  # no git on the machine
        return None
    return done.stdout if done.returncode == 0 else None


def repository_of(path: Path = PACKAGE_DIR) -> Optional[Path]:
    """The git work tree holding ``path`` whose files include it (``None``: not in a checkout).

    A package installed into a virtual environment that happens to lie inside some
    other repository is not tracked there; it must not take that repository's commit.
    """
    top = _git(path, "rev-parse", "--show-toplevel")
    if top is None:
        return None
    repo = Path(top.strip())
    tracked = _git(repo, "ls-files", "--error-unmatch", str(path / "__init__.py"))
    return repo if tracked is not None else None


def no_checkout_label(version: Optional[str]) -> str:
    """``git_commit`` of a run whose code lay in no git checkout: ``no git checkout (avalanche-sst 0.1.0)``.

    It names the package version instead, and is never empty, so the report tells such a run
    from one made before provenance was recorded. No comma: ``runs.csv`` writers do not quote it.
    """
    return f"{NO_CHECKOUT} (avalanche-sst {version or 'version unknown'})"


def ran_outside_a_checkout(commit: Optional[str]) -> bool:
    """Whether a recorded ``git_commit`` is a :func:`no_checkout_label` rather than a commit."""
    return str(commit or "").startswith(NO_CHECKOUT)


@lru_cache(maxsize=None)
def _cached(path: Path) -> dict:
    version = package_version("avalanche-sst")
    repo = repository_of(path)
    if repo is None:
        return {"package": "avalanche-sst", "version": version, "git_commit": no_checkout_label(version),
                "git_dirty": None}
    head = _git(repo, "rev-parse", "HEAD")
    status = _git(repo, "status", "--porcelain", "--untracked-files=no", "--", ".", *OUTPUT_PATHSPECS)
    return {"package": "avalanche-sst", "version": version, "git_commit": head.strip() if head else None,
            "git_dirty": None if status is None else bool(status.strip())}


def code_provenance(path: Path = PACKAGE_DIR, refresh: bool = False) -> dict:
    """``{"package", "version", "git_commit", "git_dirty"}`` of the code at ``path``.

    ``git_dirty`` is True when tracked files differ from the commit (untracked files,
    e.g. result folders, and the outputs under ``docs/`` (:data:`OUTPUT_PATHSPECS`) do not count). Computed once per process (``refresh=True`` to
    ask git again): a sweep's runs all use the code the process imported.
    """
    if refresh:
        _cached.cache_clear()
    return dict(_cached(Path(path)))


def provenance_text(entries) -> str:
    """``abc1234`` / ``abc1234 (dirty)`` / ``no git checkout (avalanche-sst 0.1.0)``, for every
    distinct (commit, dirty) of ``entries``, joined."""
    seen = dict.fromkeys((e.get("git_commit"), e.get("git_dirty")) for e in entries)
    parts = [("unknown commit" if c is None else c if ran_outside_a_checkout(c) else c[:12])
             + (" (uncommitted changes)" if d else "") for c, d in seen]
    return ", ".join(parts) or "no runs"


def code_text() -> str:
    """The code this process runs, as :func:`provenance_text` writes it (``abc1234`` or with its dirt)."""
    return provenance_text([code_provenance()])


class StaleRunsError(ValueError):
    """A table's runs lack the training cost or the provenance of the code that made them."""


def check_provenance(rows, table: str, command: str) -> None:
    """Refuse ``rows`` (dicts read from a ``runs.csv``) unless every one has a cost and a commit.

    Such runs came from code older than cost accounting or provenance: their numbers
    may not be what the current code gives, so they are not published. A run made outside
    a git checkout (:func:`no_checkout_label` in ``git_commit``) has its provenance and passes.
    """
    rows = list(rows)
    lacking = []
    if not rows:
        lacking.append("any run")
    if rows and any(str(r.get("cost") or "").strip() == "" for r in rows):
        lacking.append("the training cost (column `cost`)")
    if rows and any(not str(r.get("git_commit") or "").strip() for r in rows):
        lacking.append("the commit of the code that ran them (column `git_commit`)")
    if lacking:
        raise StaleRunsError(f"table {table!r}: its runs lack {' and '.join(lacking)}, so they may come from "
                             f"older code; regenerate them with `{command}`")
