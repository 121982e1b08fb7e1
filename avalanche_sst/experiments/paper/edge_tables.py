"""The edge method's tables (seed 004: Zhao, Chen & Zhao, filter pruning and
selective layer-wise knowledge transfer), registered at import.

* ``edge_table1``: Table 1 in kind: the teacher against its students
  compressed at P = 1.0, 0.9, 0.8, 0.7 (Top-1 on the classes they learned,
  parameters, FLOPs of one image, compression ratio);
* ``edge_table4``: Table 4 in kind, "9+1": old-, new-class, plain and
  sample-weighted mean accuracy after the incremental step, students with
  knowledge transfer against the same students fine-tuned without it, and
  Avalanche's LwF and Cumulative (upper bound) on the teacher's network;
* ``edge_table7``: Table 7 in kind: accuracy on classes the student never
  saw, after learning unlabelled images of two classes from the teacher,
  against a student trained on the same images with their labels.

Accuracy follows the paper's rule (test accuracy at the best validation
epoch, the mean of old- and new-class validation accuracy in the
incremental step); the last epoch's is the column "Weighted, last epoch".
The unlabelled student of Table 7 has no labelled validation data and keeps
its last epoch.

Presets: ``cpu``: Fashion-MNIST, ResNet-14 teacher (2 blocks per group; the
students keep one), 10% of the training images, 3 seeds; ``paper``:
CIFAR-10, WRN-28-10, 200 epochs (a GPU); ``tiny``: for tests.
"""

from __future__ import annotations

from avalanche_sst.experiments.paper.specs import Cell, Paper, TableSpec, preset_set, register, register_paper
from avalanche_sst.experiments.presets import Preset

EDGE_PAPER = register_paper(Paper(
    id="004", citation="Zhao, Chen & Zhao 2021",
    title="Enabling Deep Learning on Edge Devices through Filter Pruning and Knowledge Transfer"))

THRESHOLDS = (1.0, 0.9, 0.8, 0.7)


def _cpu(**changes) -> Preset:
    base = Preset(
        name="edge-cpu", dataset="fashion_mnist", model="resnet14", seeds=(0, 1, 2),
        scenario="new_class", scenario_kwargs={"base_classes": 9},
        train_fraction=0.1, test_fraction=1.0, validation_fraction=0.1, batch_size=128, eval_batch_size=1000,
        epochs_scratch=10, lr_scratch=0.1, momentum=0.9, weight_decay=5e-4,
        # The incremental step: 15 epochs (the edge students, and LwF's and Cumulative's second step).
        # Table 7's KT student runs at the lr (and J1's logits) an earlier selection chose for Table 4
        # (seed 0, edge methods only); Table 4 selects every method's by the rule (TABLE4_CHOICES).
        epochs_finetune=15, lr_finetune=0.003,
        method_kwargs={"edge_kt": {"lr_incremental": 0.003, "j1_outputs": "known"},
                       "edge_finetune": {"lr_incremental": 0.001}},
        device="cpu",
    )
    return base.replace(**changes)


def _cifar(**changes) -> Preset:
    base = Preset(
        name="edge-cifar10", dataset="cifar10", data_root="data/cifar10", model="wrn28-10", seeds=(0, 1, 2),
        scenario="new_class", scenario_kwargs={"base_classes": 9},
        train_fraction=1.0, test_fraction=1.0, validation_fraction=0.1, batch_size=128, eval_batch_size=1000,
        epochs_scratch=200, lr_scratch=0.1, epochs_finetune=200, lr_finetune=0.1, momentum=0.9,
        weight_decay=5e-4, device="cuda", flush_denormal=False,
    )
    return base.replace(**changes)


def _tiny(**changes) -> Preset:
    base = Preset(
        name="edge-tiny", dataset="fashion_mnist", model="resnet8-w4", seeds=(0,),
        scenario="new_class", scenario_kwargs={"base_classes": 9},
        train_fraction=0.02, test_fraction=0.02, validation_fraction=0.2, batch_size=32, eval_batch_size=256,
        epochs_scratch=1, epochs_finetune=1, lr_finetune=0.01, num_threads=1,
    )
    return base.replace(**changes)


# Table 4's (and Table 1's, its runs) rates for the incremental step, chosen per method family on the
# validation slices by the rule (every family, one grid, 3 seeds, the best mean of old- and new-class
# accuracy; docs/runs/selection/edge_table4/selection.md, no choice on the grid's edge); every threshold P
# runs at its family's choice (factor x the cpu preset's lr_finetune 0.003):
# python experiments/select_on_validation.py edge_table4 --methods edge_kt edge_finetune lwf cumulative
#   --grid lr_finetune_factor=0.1,0.316,1,3.16,10,31.6 --seeds 0 1 2 --workers 2
TABLE4_CHOICES: dict = {"edge_kt": {"lr_finetune_factor": 1}, "edge_finetune": {"lr_finetune_factor": 1},
                        "lwf": {"lr_finetune_factor": 0.316}, "cumulative": {"lr_finetune_factor": 10}}

LONG_STUDENT = 60  # Table 7's students: epochs from scratch on the two seen classes
_UNSEEN = dict(scenario="unseen_class", scenario_kwargs={"seen_classes": 2, "labelled": True})


def _kt(p: float) -> str:
    return f"edge_kt:threshold={p}"


def _ft(p: float) -> str:
    return f"edge_finetune:threshold={p}"


TABLE1_COLUMNS = ("Top-1 (%)", "Params", "FLOPs", "Compression (x)")
_TABLE1_SCORES = {"Params": "student_params", "FLOPs": "student_flops", "Compression (x)": "compression_ratio"}

register(TableSpec(
    id="edge_table1",
    title="The teacher and its students compressed at threshold P: Top-1 (%) on the 9 classes they learned, "
          "parameters, FLOPs of one image, compression ratio (teacher / student parameters)",
    varies="pruning threshold P (a filter is prunable on an image when >= P of its post-ReLU map is zero)",
    corner="Model",
    rows=("Teacher", *(f"P = {p}" for p in THRESHOLDS)),
    columns=TABLE1_COLUMNS,
    cells=(
        Cell("Teacher", "Top-1 (%)", _kt(1.0), 1, score="teacher/test_best/exp0"),
        Cell("Teacher", "Params", _kt(1.0), 1, score="teacher_params"),
        Cell("Teacher", "FLOPs", _kt(1.0), 1, score="teacher_flops"),
        *(Cell(f"P = {p}", col, _kt(p), 1, score=_TABLE1_SCORES.get(col, "old"))
          for p in THRESHOLDS for col in TABLE1_COLUMNS),
    ),
    presets=preset_set("edge_table1", _cpu(method_kwargs=TABLE4_CHOICES), _cifar(), _tiny()),
    runs_of="edge_table4",
    paper_setting="CIFAR-10 WRN-28-10",
    paper_source="Table 1",
    paper=EDGE_PAPER.id,
    decimals=(("Params", 0), ("FLOPs", 0), ("Compression (x)", 1)),
    paper_claims=(
        (("P = 0.7", "Compression (x)"), ("P = 1.0", "Compression (x)"),
         "our model compression method can remove up to 99.36% parameters of WRN-28-10"),
    ),
    notes=("The students are trained from scratch on the teacher's 9 classes (experience 0 of the 9+1 "
           "benchmark); their Top-1 is the test accuracy at the best validation epoch.",),
))

TABLE4_ROWS = (
    *((f"w/ KT, P = {p}", _kt(p)) for p in THRESHOLDS),
    ("w/o KT, P = 1.0", _ft(1.0)), ("w/o KT, P = 0.7", _ft(0.7)),
    ("LwF (teacher's network)", "lwf"), ("Cumulative (upper bound)", "cumulative"),
)
TABLE4_SCORES = (("9 old", "old"), ("1 new", "new"), ("Mean", "mean"), ("Weighted", "weighted_mean"))
LAST_EPOCH = "Weighted, last epoch"

register(TableSpec(
    id="edge_table4",
    title="Top-1 accuracy (%) after learning one new class (9+1): old classes, the new class, "
          "their plain and sample-weighted means",
    varies="knowledge transfer on or off, pruning threshold P; Avalanche's LwF and Cumulative",
    corner="Student",
    rows=tuple(label for label, _ in TABLE4_ROWS),
    columns=(*(col for col, _ in TABLE4_SCORES), LAST_EPOCH),
    cells=(
        *(Cell(label, col, method, 2, score=score) for label, method in TABLE4_ROWS for col, score in TABLE4_SCORES),
        *(Cell(label, LAST_EPOCH, method, 2, score="incremental/test_last/all")
          for label, method in TABLE4_ROWS if method.startswith("edge_")),
    ),
    presets=preset_set("edge_table4", _cpu(method_kwargs=TABLE4_CHOICES), _cifar(), _tiny()),
    selection_score="mean",
    paper_setting="CIFAR-10 WRN-28-10 9+1",
    paper_source="Table 4",
    paper=EDGE_PAPER.id,
    paper_claims=tuple(
        ((f"w/ KT, P = {p}", "9 old"), (f"w/o KT, P = {p}", "9 old"),
         "the independent student (w/o KT) cannot classify any of the old categories any more ... In contract, "
         "our dependent students (w/ KT) ... retains a good level of accuracy for classifying the old categories")
        for p in (1.0, 0.7)
    ),
    notes=("The students learn the new class from its images alone; with knowledge transfer (l1*J1 + "
           "l2*sum J_b + l3*J3) and without it (cross entropy), updating only the last conv of each group "
           "and the classifier (BatchNorm frozen). LwF and Cumulative train every layer of the teacher's "
           "network. 'Weighted, last epoch' is the students' test accuracy after their last epoch instead of "
           "their best validation epoch.",),
))

register(TableSpec(
    id="edge_table7",
    title="Top-1 accuracy (%) on the 8 classes the student never saw, after learning 2 classes",
    varies="knowledge transfer from unlabelled images against training with labels",
    corner="Model",
    rows=("Teacher (all classes)", "Student w/ KT (unlabelled)", "Independent student (labelled)",
          f"Student w/ KT, {LONG_STUDENT} epochs", f"Independent student, {LONG_STUDENT} epochs"),
    columns=("Unseen classes",),
    cells=(
        Cell("Teacher (all classes)", "Unseen classes", "edge_kt", 1, score="teacher/test_best/exp0"),
        Cell("Student w/ KT (unlabelled)", "Unseen classes", "edge_kt", 1),
        Cell("Independent student (labelled)", "Unseen classes", "edge_independent", 1),
        Cell(f"Student w/ KT, {LONG_STUDENT} epochs", "Unseen classes", f"edge_kt:epochs_student={LONG_STUDENT}", 1),
        Cell(f"Independent student, {LONG_STUDENT} epochs", "Unseen classes",
             f"edge_independent:epochs_student={LONG_STUDENT}", 1),
    ),
    presets=preset_set("edge_table7", _cpu(**_UNSEEN), _cifar(**_UNSEEN), _tiny(**_UNSEEN)),
    paper_setting="CIFAR-10 WRN-28-10 unseen classes",
    paper_source="Table 7",
    paper=EDGE_PAPER.id,
    paper_claims=tuple(
        ((kt, "Unseen classes"), (independent, "Unseen classes"),
         "it enables the model to classify unseen categories of data (78.92% Top-1 accuracy) that it is "
         "never trained with")
        for kt, independent in (("Student w/ KT (unlabelled)", "Independent student (labelled)"),
                                (f"Student w/ KT, {LONG_STUDENT} epochs", f"Independent student, {LONG_STUDENT} epochs"))
    ),
    notes=("The teacher learns every class; the students see the training images of 2 classes only "
           "(the KT student without their labels, J1 + sum J_b) and are tested on the other 8.",
           f"Two classes are few iterations an epoch (cpu: about 9), so the students also train {LONG_STUDENT} "
           "epochs instead of the preset's 10 (the unlabelled student has no labelled validation data to "
           "tell when it converged; the paper trains 200 epochs on 10,000 images).",),
))
