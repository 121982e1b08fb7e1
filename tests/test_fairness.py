"""Issue 21, point 6: the generated list of tables whose compared methods differ in hyperparameters or budgets."""

from __future__ import annotations

import dataclasses

from avalanche_sst.experiments.paper import TABLES
from avalanche_sst.experiments.paper.fairness import fairness_section, table_differences, tuned_methods


def test_fig4_lists_its_uneven_learning_rates_and_its_untuned_baselines(tmp_path):
    (tmp_path / "m2kd_fig4").mkdir()
    (tmp_path / "m2kd_fig4" / "scores.csv").write_text(
        "variant,seed,top1_seen\nm2kd:lr_factor=1,0,0.2\n\"m2kd:lam=0,lr_factor=10\",0,0.3\nlwf_mc:lr_factor=10,0,0.3\n")
    assert tuned_methods("m2kd_fig4", tmp_path) == {"m2kd", "lwf_mc"}
    assert tuned_methods("m2kd_table1", tmp_path) is None
    fig4 = TABLES["m2kd_fig4"]
    lines = table_differences(fig4, "cpu", tmp_path)
    assert lines[0].startswith("extra_epochs: 0 for `finetune`") and "(declared: fine-tuning after pruning" in lines[0]
    # each method at its own selected factor (Cumulative's is 1: the preset's own rate)
    assert lines[1] == ("learning rate: lr_factor=10.0 for `finetune`, `lwf`, `m2kd`, `icarl_m2kd`; lr_factor=0.1 "
                        "for `ewc`; lr_factor=3.16 for `rwalk`, `icarl`; lr_factor=0.0316 for `lwf_mc`, "
                        "`m2kd:prune_ratio=0,lr_factor=0.0316`; lr_factor=31.6 for `m2kd:lam=0,lr_factor=31.6`; the "
                        "preset's (lr_scratch=0.1, lr_finetune=0.1) for `cumulative`")
    assert lines[2] == (f"selected on validation (`{tmp_path.as_posix()}/m2kd_fig4`): `lwf_mc`, `m2kd`; not selected: "
                        "`finetune`, `lwf`, `ewc`, `rwalk`, `icarl`, `icarl_m2kd`, `cumulative`")
    assert len(lines) == 3
    # one lr_factor for every method (the one M2KD (no L_AD) carries in its name), no selection record:
    # only the declared epochs and the one variant that carries another factor in its name
    bases = {m.split(":")[0] for m in fig4.methods()}
    even = {n: p.replace(method_kwargs={m: {"lr_factor": 31.6, **({"memory_size": 2000} if "icarl" in m else {})}
                                        for m in bases}) for n, p in fig4.presets.items()}
    lines = table_differences(dataclasses.replace(fig4, presets=even), "cpu", tmp_path / "none")
    assert len(lines) == 2 and lines[0].startswith("extra_epochs")
    assert lines[1].endswith("; lr_factor=0.0316 for `m2kd:prune_ratio=0,lr_factor=0.0316`")


def test_the_section_lists_tables_with_and_without_differences(tmp_path):
    text = fairness_section([TABLES["table1"], TABLES["m2kd_table1"], TABLES["edge_table7"]], "cpu", tmp_path)
    assert text.startswith("## Compared methods with different hyperparameters or budgets\n")
    assert "- **m2kd_table1**: extra_epochs: 0 for `m2kd:prune_ratio=0`; method default for" in text
    assert "- **edge_table7**: learning rate: lr_incremental=0.003 for `edge_kt`" in text
    assert text.rstrip().endswith("No such difference: `table1`.")
