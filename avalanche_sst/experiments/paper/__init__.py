"""Papers' tables, reproduced in kind: specs, running, writing, statistics and the report.

Layout (each module imports only those above it):

* :mod:`.specs`: :class:`Cell`, :class:`TableSpec`, :class:`Paper` and the
  registries :data:`TABLES` / :data:`PAPERS`;
* :mod:`.fig3`: the SST paper's Fig. 3 (|gamma| of pre-trained, BST and SST networks);
* :mod:`.sst_tables`: the SST paper's (seed 000) Tables 1-7 and Fig. 3, registered at import;
* :mod:`.cost`: the CPU-time estimate of a table;
* :mod:`.formatting`: "mean ± std" cells, the paper-shaped grid, Markdown, the table's files;
* :mod:`.stats`: the paper's numbers and the ordering comparison with seed t-tests;
* :mod:`.runner`: :func:`run_table` (the sweeps, or Fig. 3);
* :mod:`.report`: :func:`write_report` (``docs/results.md``, grouped by paper) and :func:`archive_tables`.

Another paper's tables go in one new module here (e.g. ``m2kd_tables.py``)
that calls ``register_paper(Paper(id="002", citation=...))`` once and
``register(TableSpec(..., paper="002"))`` per table (ids unique across papers,
e.g. ``"m2kd_table1"``), plus one import line below.
"""

from avalanche_sst.experiments.paper.specs import (PAPERS, PRESET_NAMES, TABLES, Cell, Paper, TableSpec,
                                                   preset_set, register, register_paper, resolve_overrides,
                                                   sweep_dirname, sweep_groups, tables_by_paper)

# One import per paper, in seed order: each module registers its tables (the report groups them by paper).
from avalanche_sst.experiments.paper import sst_tables  # noqa: F401  (seed 000, Lee & Kim 2023)
from avalanche_sst.experiments.paper import m2kd_tables  # noqa: F401  (seed 002, Zhou et al.)
from avalanche_sst.experiments.paper import adaq_tables  # noqa: F401  (seed 003, Pietron et al.)
from avalanche_sst.experiments.paper import edge_tables  # noqa: F401  (seed 004, Zhao, Chen & Zhao)

from avalanche_sst.experiments.paper.cost import estimate_cpu_seconds
from avalanche_sst.experiments.paper.fig3 import FIG3_COLS, FIG3_KEYS, FIG3_ROWS, gamma_stats, run_fig3
from avalanche_sst.experiments.paper.formatting import (CELL_RE, fmt_cell, markdown, models_text, parse_cell,
                                                        read_runs_csv, read_table_csv, table_grid, write_table)
from avalanche_sst.experiments.paper.report import (archive_tables, cpu_seconds, our_cells, seed_values, time_text,
                                                    write_report)
from avalanche_sst.experiments.paper.runner import default_command, run_table
from avalanche_sst.experiments.paper.stats import (ALPHA, Ordering, PaperNumber, compare_orderings,
                                                   load_paper_numbers, order_groups, ordering_sentence, pair_label,
                                                   paper_cells, seed_test, table_ordering)
from avalanche_sst.experiments.tables import mean_std

# The names these helpers had before the package split (tests use them).
_sweep_groups = sweep_groups
_time_text = time_text

__all__ = [
    "ALPHA", "CELL_RE", "Cell", "FIG3_COLS", "FIG3_KEYS", "FIG3_ROWS", "Ordering", "PAPERS", "PRESET_NAMES",
    "Paper", "PaperNumber", "TABLES", "TableSpec", "archive_tables", "compare_orderings", "cpu_seconds",
    "default_command", "estimate_cpu_seconds", "fmt_cell", "gamma_stats", "load_paper_numbers", "markdown",
    "mean_std", "models_text", "order_groups", "ordering_sentence", "our_cells", "pair_label", "paper_cells",
    "parse_cell", "preset_set", "read_runs_csv", "read_table_csv", "register", "register_paper",
    "resolve_overrides", "run_fig3", "run_table", "seed_test", "seed_values", "sweep_dirname", "sweep_groups",
    "table_grid", "table_ordering", "tables_by_paper", "time_text", "write_report", "write_table",
]
