"""The SST paper's tables (seed 000: Lee & Kim, IEEE Access 2023, sec. IV), registered at import.

Every table says what the paper varies, which method variant
(``avalanche_sst.experiments.methods.get_method`` names, e.g.
``"sst:sparsity=bst,use_msl=False"``) and which step fills each cell of the
paper's row/column layout, and which ``Preset`` fields a cell changes (e.g.
the model, for Table 2). Each table has three presets:

* ``cpu``: Fashion-MNIST on 2 CPU cores at 3 seeds, sized so that all nine
  entries run in about two hours as two one-thread processes side by side
  (``paper_tables.py --list`` prints ``estimate_cpu_seconds``, 13-19 min
  each; docs/results.md has the measured times);
* ``paper``: the paper's dataset, model, batch size, weight decay and epochs
  (CIFAR-100: batch 256, wd 5e-4, 300 epochs; Tiny-ImageNet: batch 64, wd
  1e-4, 90 epochs), for a GPU and data this machine may lack;
* ``tiny``: a few batches of a width-4 ResNet-8, for the tests.

``fig3`` is not a sweep: :mod:`.fig3` trains BST and SST from the same
pre-trained model and compares their filter scaling factors.
"""

from __future__ import annotations

from typing import Sequence

from avalanche_sst.experiments.paper.fig3 import FIG3_COLS, FIG3_ROWS
from avalanche_sst.experiments.paper.specs import Cell, Paper, TableSpec, preset_set, register, register_paper
from avalanche_sst.experiments.presets import Preset

SST_PAPER = register_paper(Paper(
    id="000", citation="Lee & Kim 2023",
    title="Multi-step training framework using sparsity training for efficient utilization of accumulated "
          "new data in convolutional neural networks (IEEE Access 2023)"))


def _cpu(**changes) -> Preset:
    """The CPU base: Fashion-MNIST, ResNet-8, 3 seeds, the whole test set.

    Batch 64 and 9-epoch SST phases, as the ``quick`` preset on which lam =
    0.01 was checked to take the Target_r fraction to |gamma| <= 0.01 (needs
    about 250+ SST iterations; every cpu preset below has more).
    """
    base = Preset(
        name="paper-cpu", dataset="fashion_mnist", model="resnet8", seeds=(0, 1, 2),
        test_fraction=1.0, validation_fraction=0.1, batch_size=64, eval_batch_size=1000,
        epochs_scratch=4, epochs_finetune=3, sst_epochs=9, aod_epochs=3,
        # lr 0.01 after step 1: the CPU scaling of the quick/full presets (0.001 barely moves a model in 3 epochs).
        lr_scratch=0.1, lr_finetune=0.01, momentum=0.9, weight_decay=5e-4, device="cpu",
    )
    return base.replace(**changes)


def _cifar(**changes) -> Preset:
    """Paper, CIFAR-100 (sec. IV-B): batch 256, wd 5e-4, 300 epochs per phase, cosine."""
    base = Preset(
        name="paper-cifar100", dataset="cifar100", data_root="data/cifar100", model="resnet110",
        seeds=(0, 1, 2), train_fraction=1.0, test_fraction=1.0, validation_fraction=0.1,
        batch_size=256, eval_batch_size=1000, epochs_scratch=300, epochs_finetune=300,
        sst_epochs=300, aod_epochs=300, lr_scratch=0.1, lr_finetune=0.001, momentum=0.9,
        weight_decay=5e-4, device="cuda", flush_denormal=False,
        sst_kwargs={"lam": 1e-4},  # Network Slimming's lambda for long phases; 1e-2 is for few-epoch phases
    )
    return base.replace(**changes)


def _tiny_imagenet(**changes) -> Preset:
    """Paper, Tiny-ImageNet (sec. IV-B): batch 64, wd 1e-4, 90 epochs per phase.

    The paper divides the lr by 10 every 30 epochs there; the product anneals
    with a cosine (``StepwiseCosinePlugin``, METHOD.md) in every preset.
    """
    base = Preset(
        name="paper-tiny-imagenet", dataset="tiny_imagenet", data_root="data/tiny-imagenet-200",
        model="resnet50", seeds=(0, 1, 2), train_fraction=1.0, test_fraction=1.0,
        validation_fraction=0.1, batch_size=64, eval_batch_size=500, epochs_scratch=90,
        epochs_finetune=90, sst_epochs=90, aod_epochs=90, lr_scratch=0.1, lr_finetune=0.001,
        momentum=0.9, weight_decay=1e-4, device="cuda", flush_denormal=False,
        sst_kwargs={"lam": 1e-4},  # Network Slimming's lambda for long phases; 1e-2 is for few-epoch phases
    )
    return base.replace(**changes)


def _tiny(**changes) -> Preset:
    """Tests: a width-4 ResNet-8, a few batches, one epoch per phase, one thread."""
    base = Preset(
        name="paper-tiny", dataset="fashion_mnist", model="resnet8-w4", seeds=(0,),
        train_fraction=0.01, test_fraction=0.02, validation_fraction=0.2, batch_size=32,
        eval_batch_size=256, epochs_scratch=1, epochs_finetune=1, sst_epochs=1, aod_epochs=1,
        lr_finetune=0.02, num_threads=1,
    )
    return base.replace(**changes)


def _one_row(row: str, cols: Sequence[tuple[str, str]], step: int) -> tuple[Cell, ...]:
    return tuple(Cell(row, col, method, step) for col, method in cols)


def _step_rows(cols: Sequence[tuple[str, str]], steps: int, row_fmt: str = "Step {k}") -> tuple[Cell, ...]:
    return tuple(Cell(row_fmt.format(k=k), col, method, k) for k in range(1, steps + 1) for col, method in cols)


TARGETS = (0.1, 0.3, 0.5)
CUTS = (("E_max/2", 0.5), ("E_max/3", 1.0 / 3.0), ("E_max/4", 0.25))
SINGLE, MULTI = (1, 1), (1, 1, 1, 1)

# Table 7's compared methods: the paper's four plus Avalanche's LwF, EWC and Cumulative; then
# (issue 14) the framework with the options chosen on validation, and fine-tuning, LwF and EWC given
# the framework's training cost step by step (``budget=sst``), so the table also compares at equal cost.
T7_METHODS = (
    ("Baseline (fine-tuning)", "finetune"), ("HPO", "hpo"), ("DML", "dml"), ("LwM", "lwm"),
    ("LwF", "lwf"), ("EWC", "ewc"), ("Cumulative", "cumulative"), ("Ours", "sst"),
    ("Ours + options (sst_plus)", "sst_plus"), ("Fine-tuning at our cost", "finetune:budget=sst"),
    ("LwF at our cost", "lwf:budget=sst"), ("EWC at our cost", "ewc:budget=sst"),
)
T7_NOTES = ("LwF, EWC and Cumulative (upper bound) are Avalanche's and not in the paper.",
            "\"at our cost\": the baseline trains, step by step, as many epochs as cost what the framework "
            "spends on that step (sample-passes, step 1's SST phase included; "
            "avalanche_sst.experiments.budget). \"Ours + options\": `sst_plus`, the options beyond the paper "
            "kept on the validation slices (docs/results.md, \"Options beyond the paper\").")


# Table 1 cpu: 9 single-step sst variants, f = 0.08 (2160 samples per part).
register(TableSpec(
    id="table1",
    title="Top-1 accuracy (%) according to Target_r and E_cut (single-step, new data)",
    varies="Target_r in {0.1, 0.3, 0.5} x E_cut in {E_max/2, E_max/3, E_max/4}; single-step 1:1, "
           "accuracy after step 2",
    corner="Target_r / E_cut",
    rows=tuple(str(t) for t in TARGETS),
    columns=tuple(label for label, _ in CUTS),
    cells=tuple(Cell(str(t), label, f"sst:target_ratio={t},cut_fraction={frac!r}", 2)
                for t in TARGETS for label, frac in CUTS),
    presets=preset_set("table1", _cpu(ratios=SINGLE, train_fraction=0.08), _tiny_imagenet(ratios=SINGLE),
                        _tiny(ratios=SINGLE)),
    paper_setting="Tiny-ImageNet ResNet50 single-step",
    paper_source="Table 1",
    paper=SST_PAPER.id,
    order="all",
))

_T2_MODELS = (
    ("ResNet34", {"cpu": "resnet8", "paper": "resnet34", "tiny": "resnet8-w4"}),
    ("ResNet50", {"cpu": "resnet14", "paper": "resnet50", "tiny": "resnet14-w4"}),
    ("ResNet101", {"cpu": "resnet20", "paper": "resnet101", "tiny": "resnet20-w4"}),
)
# Table 2 cpu: 3 Target_r x ResNet-8/14/20 (cost 1x/2x/3x: 7/13/19 conv layers), f = 0.045.
register(TableSpec(
    id="table2",
    title="Top-1 accuracy (%) according to Target_r on various networks (single-step, new data)",
    varies="Target_r in {0.1, 0.3, 0.5} x network depth (E_cut = E_max/3); single-step 1:1, accuracy after step 2",
    corner="Network / Target_r",
    rows=tuple(label for label, _ in _T2_MODELS),
    columns=tuple(str(t) for t in TARGETS),
    cells=tuple(Cell(label, str(t), f"sst:target_ratio={t}", 2, (("model", models),))
                for label, models in _T2_MODELS for t in TARGETS),
    presets=preset_set("table2", _cpu(ratios=SINGLE, train_fraction=0.045), _tiny_imagenet(ratios=SINGLE),
                        _tiny(ratios=SINGLE)),
    paper_setting="Tiny-ImageNet single-step",
    paper_source="Table 2",
    paper=SST_PAPER.id,
    notes=("Rows are the paper's networks; each runs the model named under 'models' for the preset "
           "(CPU: ResNet-8/14/20 for ResNet34/50/101, in order of depth).",),
))

# Table 3 cpu: 4 single-step sst variants, f = 0.17.
register(TableSpec(
    id="table3",
    title="Top-1 accuracy (%) according to the loss functions in AOD (single-step, new data)",
    varies="AOD loss terms: CE only / fixed-weight KD / adaptive KD / adaptive KD + CR",
    corner="Metric",
    rows=("Acc.(%)",),
    columns=("General training", "General L_KD", "Adaptive L_KD", "Adaptive L_KD + L_CR"),
    cells=_one_row("Acc.(%)", (
        ("General training", "sst:use_kd=False,use_cr=False"),
        ("General L_KD", "sst:adaptive_weights=False,use_cr=False"),
        ("Adaptive L_KD", "sst:use_cr=False"),
        ("Adaptive L_KD + L_CR", "sst"),
    ), 2),
    presets=preset_set("table3", _cpu(ratios=SINGLE, train_fraction=0.17), _cifar(ratios=SINGLE, model="resnet110"),
                        _tiny(ratios=SINGLE)),
    paper_setting="CIFAR-100 ResNet110 single-step",
    paper_source="Table 3",
    paper=SST_PAPER.id,
    gain="row",
))

# Table 4 cpu: 3 single-step sst variants ('w/ FT' costs 1/4 of AOD in step 2), f = 0.25.
register(TableSpec(
    id="table4",
    title="Top-1 accuracy (%) with and without diverse re-initialization (Dri) and AOD after SST",
    varies="new-data training after SST: fine-tuning / AOD with equal margins / AOD with diverse re-init",
    corner="Metric",
    rows=("Acc.(%)",),
    columns=("w/ FT", "w/ AOD", "w/ AOD&Dri"),
    cells=_one_row("Acc.(%)", (
        ("w/ FT", "sst:new_data=finetune,reinit=False"),
        ("w/ AOD", "sst:reinit=False"),
        ("w/ AOD&Dri", "sst"),
    ), 2),
    presets=preset_set("table4", _cpu(ratios=SINGLE, train_fraction=0.25), _tiny_imagenet(ratios=SINGLE),
                        _tiny(ratios=SINGLE)),
    paper_setting="Tiny-ImageNet ResNet50 single-step",
    paper_source="Table 4",
    paper=SST_PAPER.id,
    gain="row",
    notes=("'w/ FT' is MultiStepSST(new_data='finetune'): the prepared model is re-initialised "
           "(margin 0.1) and fine-tuned; 'w/ AOD' uses margin 0.1 for both students.",),
))

# Table 5 cpu: 2 multi-step sst variants, f = 0.22 (2970 samples per part).
register(TableSpec(
    id="table5",
    title="Top-1 accuracy (%) with a fixed or an updated teacher in MSL (multi-step)",
    varies="MSL teacher: fixed vs updated when the student beats it on validation data; 4 steps",
    corner="Step",
    rows=tuple(f"Step {k}" for k in range(1, 5)),
    columns=("Fixed teacher network", "Teacher network update"),
    cells=_step_rows((("Fixed teacher network", "sst:update_teacher=False"),
                      ("Teacher network update", "sst")), 4),
    presets=preset_set("table5", _cpu(ratios=MULTI, train_fraction=0.22), _tiny_imagenet(ratios=MULTI),
                        _tiny(ratios=MULTI)),
    paper_setting="Tiny-ImageNet ResNet50 multi-step",
    paper_source="Table 5",
    paper=SST_PAPER.id,
    gain="col",
))

# Table 6 cpu: 4 multi-step variants, f = 0.11.
register(TableSpec(
    id="table6",
    title="Top-1 accuracy (%) with and without MSL in BST and SST (multi-step)",
    varies="sparsity training BST vs SST, each with and without MSL; 4 steps",
    corner="Step",
    rows=tuple(f"Step {k}" for k in range(1, 5)),
    columns=("BST w/o MSL", "BST w/ MSL", "SST w/o MSL", "SST w/ MSL"),
    cells=_step_rows((("BST w/o MSL", "sst:sparsity=bst,use_msl=False"), ("BST w/ MSL", "sst:sparsity=bst"),
                      ("SST w/o MSL", "sst:use_msl=False"), ("SST w/ MSL", "sst")), 4),
    presets=preset_set("table6", _cpu(ratios=MULTI, train_fraction=0.11), _tiny_imagenet(ratios=MULTI),
                        _tiny(ratios=MULTI)),
    paper_setting="Tiny-ImageNet ResNet50 multi-step",
    paper_source="Table 6",
    paper=SST_PAPER.id,
))

# Table 7 single-step cpu: 8 methods (HPO = 4 lr candidates), f = 0.17.
register(TableSpec(
    id="table7_single",
    title="Top-1 accuracy (%) in single-step training: previous (after step 1) and new (after step 2)",
    varies="method; single-step 1:1",
    corner="Training data",
    rows=("Previous", "New"),
    columns=tuple(label for label, _ in T7_METHODS),
    cells=tuple(Cell(row, col, method, step) for row, step in (("Previous", 1), ("New", 2))
                for col, method in T7_METHODS),
    presets=preset_set("table7_single", _cpu(ratios=SINGLE, train_fraction=0.17),
                        _cifar(ratios=SINGLE, model="resnet110"), _tiny(ratios=SINGLE)),
    paper_setting="CIFAR-100 ResNet110 single-step",
    paper_source="Table 7",
    paper=SST_PAPER.id,
    notes=T7_NOTES,
))

# Table 7 multi-step cpu: 8 methods x 4 steps, f = 0.14.
register(TableSpec(
    id="table7_multi",
    title="Top-1 accuracy (%) in multi-step training (1:1:1:1), after each step",
    varies="method; multi-step 1:1:1:1",
    corner="Training data",
    rows=tuple(f"Data{k}" for k in range(1, 5)),
    columns=tuple(label for label, _ in T7_METHODS),
    cells=_step_rows(T7_METHODS, 4, row_fmt="Data{k}"),
    presets=preset_set("table7_multi", _cpu(ratios=MULTI, train_fraction=0.14),
                        _cifar(ratios=MULTI, model="resnet110"), _tiny(ratios=MULTI)),
    paper_setting="CIFAR-100 ResNet110 multi-step",
    paper_source="Table 7",
    paper=SST_PAPER.id,
    notes=T7_NOTES,
))

# Fig. 3 cpu: pre-training on part 1 (f = 0.3: 8100 samples, 4 epochs), then a BST and an SST
# phase of 9 epochs each from it.
register(TableSpec(
    id="fig3",
    title="Filter scaling factors |gamma| of the pre-trained, BST and SST networks",
    varies="sparsity training: none (pre-trained) / BST (all factors) / SST (selected factors), "
           "same lam and epochs, from the same pre-trained model",
    corner="Network",
    rows=FIG3_ROWS,
    columns=FIG3_COLS,
    cells=(),
    decimals=((FIG3_COLS[1], 4), (FIG3_COLS[2], 4)),
    presets=preset_set("fig3", _cpu(ratios=SINGLE, train_fraction=0.3), _tiny_imagenet(ratios=SINGLE),
                        _tiny(ratios=SINGLE, sst_epochs=3)),  # SP_r < 1 from the second epoch: SST != BST
    paper_setting="Tiny-ImageNet ResNet50",
    paper_source="Fig. 3",
    paper=SST_PAPER.id,
    kind="fig3",
    paper_claims=((("SST", FIG3_COLS[2]), ("BST", FIG3_COLS[2]),
                   "Fig. 3(c): SST keeps the average of the remaining factors near the pre-trained one, "
                   "while with BST it is significantly reduced (sec. IV-C1)"),),
    notes=("Useless factors: the Target_r fraction with the smallest |gamma| of each network "
           "(METHOD.md's definition for re-initialisation); 'non-useless' excludes them. "
           "Top-1 is on the whole test set; the histogram pools all seeds.",),
))

