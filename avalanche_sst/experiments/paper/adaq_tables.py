"""Ada-QPacknet's tables (seed 003: Pietron et al. 2023, sec. 4), registered at import.

* ``adaq_split``: Tables 1-2 in kind on task-incremental Split Fashion-MNIST
  (5 tasks x 2 classes, task label given, one head per task): the mean
  accuracy over the tasks seen after each task for Fine-tuning, EWC, SI,
  Replay, PackNet, Ada-QPacknet and Cumulative, the forgetting after the last
  task, and PackNet's and Ada-QPacknet's capacity (eq. 10, % of the fp32 model's bits,
  summed over tasks);
* ``adaq_permuted``: the same on Permuted Fashion-MNIST, 10 tasks (the
  paper's p-MNIST in kind: no MNIST loader here), after tasks 1, 5 and 10;
* ``adaq_table4``: Table 4's ablation (capacity per task of adaptive pruning
  only, quantization only, both) with Table 5's accuracy beside it; it reads
  ``adaq_split``'s runs (same presets), adding the two variants.

Presets: ``cpu``: the BatchNorm-free MLP 784-400-400 (PackNet refuses
BatchNorm), 20% of the training images (10% of each task held out for
Ada-QPacknet's selection), 5 epochs per task, no weight decay for any method,
3 seeds; Ada-QPacknet scaled down to P_S = 4 candidates x 2 search epochs and 5
full epochs (the paper: 16 x 5 and 50), about 2.6x PackNet's training passes.
``paper``: s-CIFAR-100 (10 tasks x 10 classes) and p-Fashion-MNIST (the
paper's two-layer MLP, 100-100 as in WSN), the paper's Ada-QPacknet defaults,
a GPU. The model registry has no reduced AlexNet; s-CIFAR-100 uses the
BatchNorm-free ``cnn-64-128-256`` (AlexNet's reduced widths, three conv
layers) instead. ``tiny``: for tests.
"""

from __future__ import annotations

from avalanche_sst.experiments.paper.specs import (LAST_STEP, Cell, Paper, TableSpec, preset_set, register,
                                                   register_paper)
from avalanche_sst.experiments.presets import Preset

ADAQ_PAPER = register_paper(Paper(
    id="003", citation="Pietron et al. 2023",
    title="Ada-QPacknet - adaptive pruning with bit width reduction as an efficient continual learning method "
          "without forgetting (ECAI 2023)"))

#: The paper's Ada-QPacknet settings (sec. 4.1); ``build_adaqpacknet``'s defaults.
PAPER_ADAQ = {"population": 16, "search_epochs": 5, "full_epochs": 50}
#: CPU scaling: (P_S x search + full) = 4 x 2 + 5 = 13 epochs a task against PackNet's 5.
CPU_ADAQ = {"population": 4, "search_epochs": 2, "full_epochs": 5}
TINY_ADAQ = {"population": 2, "search_epochs": 1, "full_epochs": 1}

SPLIT_TASKS = 5
PERMUTED_TASKS = 10


def _split(**changes) -> Preset:
    base = Preset(
        name="adaq-split-cpu", dataset="fashion_mnist", model="mlp-400-400", seeds=(0, 1, 2),
        scenario="task_incremental", scenario_kwargs={"classes_per_step": 2}, multi_head=True,
        train_fraction=0.2, test_fraction=1.0, validation_fraction=0.1, batch_size=64, eval_batch_size=1000,
        # every task learns new classes from its own head: the from-scratch lr and epochs at every step
        epochs_scratch=5, epochs_finetune=5, lr_scratch=0.1, lr_finetune=0.1, momentum=0.9,
        # PackNet needs none (frozen weights would decay); the other methods match it
        weight_decay=0.0,
        # every method's lr_factor chosen by the rule on the validation slices (docs/runs/selection/adaq_split):
        # python experiments/select_on_validation.py adaq_split --grid lr_factor=0.0316,0.1,0.316,1,3.16
        #   --seeds 0 1 2 --workers 2
        # (Ada-QPacknet's factor scales its own Adam lr and floor); si_lambda=100 from an earlier selection
        # on one seed (si_lambda 0.1 ... 10000, validation slices), kept fixed in this one
        method_kwargs={"finetune": {"lr_factor": 0.1}, "ewc": {"lr_factor": 0.1},
                       "si": {"si_lambda": 100.0, "lr_factor": 1.0}, "replay": {"mem_size": 200, "lr_factor": 0.316},
                       "packnet": {"lr_factor": 1.0}, "adaqpacknet": {**CPU_ADAQ, "lr_factor": 0.316},
                       "cumulative": {"lr_factor": 0.316}},
        device="cpu",
    )
    return base.replace(**changes)


def _split_paper(**changes) -> Preset:
    base = Preset(
        name="adaq-scifar100", dataset="cifar100", data_root="data/cifar100", model="cnn-64-128-256",
        seeds=(0, 1, 2), scenario="task_incremental", scenario_kwargs={"classes_per_step": 10}, multi_head=True,
        train_fraction=1.0, test_fraction=1.0, validation_fraction=0.1, batch_size=64, eval_batch_size=1000,
        # the baselines train as long as Ada-QPacknet's winner (the paper gives no baseline schedule)
        epochs_scratch=50, epochs_finetune=50, lr_scratch=0.01, lr_finetune=0.01, momentum=0.9,
        weight_decay=0.0,
        method_kwargs={"adaqpacknet": dict(PAPER_ADAQ), "replay": {"mem_size": 2000}},
        device="cuda", flush_denormal=False,
    )
    return base.replace(**changes)


def _split_tiny(**changes) -> Preset:
    base = Preset(
        name="adaq-split-tiny", dataset="fashion_mnist", model="mlp-16", seeds=(0,),
        scenario="task_incremental", scenario_kwargs={"classes_per_step": 2}, multi_head=True,
        train_fraction=0.01, test_fraction=0.02, validation_fraction=0.2, batch_size=32, eval_batch_size=256,
        epochs_scratch=2, epochs_finetune=2, lr_scratch=0.1, lr_finetune=0.1, weight_decay=0.0,
        method_kwargs={"adaqpacknet": dict(TINY_ADAQ), "replay": {"mem_size": 20}}, num_threads=1,
    )
    return base.replace(**changes)


_PERMUTED = dict(scenario="permuted", scenario_kwargs={"n_tasks": PERMUTED_TASKS})


def _permuted(**changes) -> Preset:
    # each task holds all 10 classes (5x a split task): a smaller slice and fewer epochs keep
    # Cumulative (55 task-trainings over 10 tasks) affordable
    return _split(name="adaq-permuted-cpu", train_fraction=0.05, test_fraction=0.2, epochs_scratch=3,
                  epochs_finetune=3,
                  # lr_factor chosen by the rule (docs/runs/selection/adaq_permuted/selection.md):
                  # python experiments/select_on_validation.py adaq_permuted
                  #   --grid lr_factor=0.0316,0.1,0.316,1,3.16 --seeds 0 1 2 --workers 2
                  # si_lambda=100 from an earlier selection on one seed (0.1 ... 1000), kept fixed in this one
                  method_kwargs={"finetune": {"lr_factor": 0.316}, "ewc": {"lr_factor": 0.316},
                                 "si": {"si_lambda": 100.0, "lr_factor": 0.316},
                                 "replay": {"mem_size": 500, "lr_factor": 1.0}, "packnet": {"lr_factor": 0.316},
                                 "adaqpacknet": {"population": 4, "search_epochs": 1, "full_epochs": 3,
                                                 "lr_factor": 1.0},
                                 "cumulative": {"lr_factor": 1.0}},
                  **_PERMUTED).replace(**changes)


def _permuted_paper(**changes) -> Preset:
    return _split_paper(name="adaq-pfmnist", dataset="fashion_mnist", data_root=None, model="mlp-100-100",
                        batch_size=128, **_PERMUTED).replace(**changes)


def _permuted_tiny(**changes) -> Preset:
    return _split_tiny(name="adaq-permuted-tiny", **_PERMUTED).replace(**changes)


METHODS = (
    ("Fine-tuning", "finetune"), ("EWC", "ewc"), ("SI", "si"), ("Replay", "replay"), ("PackNet", "packnet"),
    ("Ada-QPacknet", "adaqpacknet"), ("Cumulative", "cumulative"),
)
CAPACITY = "Capacity (%)"
FORGETTING = "Forgetting (%)"


def _task_col(k: int) -> str:
    return f"Task {k}"


def _rows_cells(steps) -> tuple:
    """Per method: the mean accuracy after each of ``steps``, its forgetting after the run's last task;
    PackNet's and Ada-QPacknet's capacity after it (the paper preset of adaq_split has 10 tasks, cpu 5)."""
    return (
        *(Cell(label, _task_col(k), method, k) for label, method in METHODS for k in steps),
        *(Cell(label, FORGETTING, method, LAST_STEP, score="forgetting") for label, method in METHODS),
        Cell("PackNet", CAPACITY, "packnet", LAST_STEP, score="capacity_total"),
        Cell("Ada-QPacknet", CAPACITY, "adaqpacknet", LAST_STEP, score="capacity_total"),
    )


_NOTES = (
    "Task-incremental: the task label is given at test time; the baselines have one head per task, "
    "Ada-QPacknet one per task inside its quantized model, PackNet (Avalanche's) one shared head whose "
    "weights it splits among the tasks like every other layer's. Cells: the mean top-1 (%) over the tasks "
    "seen after that task; forgetting (%) after the last task (Avalanche's, mean over the earlier tasks).",
    "Capacity (eq. 10) after the last task: the bits Ada-QPacknet's tasks hold (codes of b bits at their "
    "kept positions, codebooks, masks, and their fp32 biases and heads), % of the fp32 bits of the model's "
    "Conv2d/Linear weights (head included), summed over tasks; PackNet's in the same unit at b = 32 "
    "(33 bits per owned weight: fp32 value and mask bit; its shared biases, frozen after the first task, "
    "count as that task's).",
    "SI (Avalanche's plugin, its weight snapshots copied: Avalanche 0.6.0's alias the parameters on a CPU "
    "and SI trained as fine-tuning) uses si_lambda chosen on the validation slices (cpu: 100).",
    "CPU scaling: Ada-QPacknet searches P_S = 4 candidates for 2 epochs each and trains the winner 5 "
    "(the paper: 16 x 5 and 50; cpu preset of adaq_permuted: 4 x 1 and 3), about 2.6x PackNet's training "
    "passes; the baselines train 5 epochs a task (3 on the permuted tasks) at SGD lr 0.1, no weight decay.",
)

register(TableSpec(
    id="adaq_split",
    title="Task-incremental Split Fashion-MNIST (5 tasks x 2 classes): mean top-1 (%) over the tasks seen "
          "after each task, forgetting, PackNet's and Ada-QPacknet's capacity",
    varies="method (cpu: Split Fashion-MNIST, 5 tasks; paper: s-CIFAR-100 10 x 10, the first 5 tasks shown)",
    corner="Method",
    rows=tuple(label for label, _ in METHODS),
    columns=(*(_task_col(k) for k in range(1, SPLIT_TASKS + 1)), FORGETTING, CAPACITY),
    cells=_rows_cells(range(1, SPLIT_TASKS + 1)),
    presets=preset_set("adaq_split", _split(), _split_paper(), _split_tiny()),
    paper_setting="s-CIFAR100 reduced AlexNet",
    paper_source="Table 1, s-CIFAR100 column (accuracy; Table 2: capacity)",
    paper=ADAQ_PAPER.id,
    order="all",
    paper_claims=tuple(
        (("Ada-QPacknet", _task_col(SPLIT_TASKS)), (label, _task_col(SPLIT_TASKS)),
         "Results highlight that the Ada-QPacknet outperforms all the considered strategies.")
        for label in ("Fine-tuning", "SI", "Replay", "PackNet", "Cumulative")
    ),
    notes=(*_NOTES, "The paper preset splits CIFAR-100 into 10 tasks; the table shows tasks 1-5 of them "
                    "(the sweep's own table.md has all 10), forgetting and capacity after task 10."),
))

_PERMUTED_STEPS = (1, 5, PERMUTED_TASKS)

register(TableSpec(
    id="adaq_permuted",
    title="Permuted Fashion-MNIST (10 tasks, task label given): mean top-1 (%) over the tasks seen after "
          "tasks 1, 5 and 10, forgetting, PackNet's and Ada-QPacknet's capacity",
    varies="method (the paper's p-MNIST in kind: Fashion-MNIST, no MNIST loader here)",
    corner="Method",
    rows=tuple(label for label, _ in METHODS),
    columns=(*(_task_col(k) for k in _PERMUTED_STEPS), FORGETTING, CAPACITY),
    cells=_rows_cells(_PERMUTED_STEPS),
    presets=preset_set("adaq_permuted", _permuted(), _permuted_paper(), _permuted_tiny()),
    paper_setting="p-MNIST two-layer MLP",
    paper_source="Table 1, p-MNIST column (accuracy after the last task)",
    paper=ADAQ_PAPER.id,
    order="all",
    notes=(*_NOTES, "Paper numbers beside ours are p-MNIST's (MNIST digits); ours permute Fashion-MNIST."),
))

ABLATION = (("Pruning only", "adaqpacknet:quantize=False"), ("Quantization only", "adaqpacknet:prune=False"),
            ("Ada-QPacknet", "adaqpacknet"))
CAPACITY_PER_TASK = "Capacity per task (%)"
ACCURACY = "Accuracy (%)"

register(TableSpec(
    id="adaq_table4",
    title="Ablation: Ada-QPacknet's capacity per task (%, mean over tasks, eq. 10) and mean top-1 (%) after "
          "the last task (cpu: 5; paper: 10), with adaptive pruning only, quantization only, and both",
    varies="which of Ada-QPacknet's two compression stages runs",
    corner="Stages",
    rows=tuple(label for label, _ in ABLATION),
    columns=(CAPACITY_PER_TASK, ACCURACY),
    cells=(
        *(Cell(label, CAPACITY_PER_TASK, method, LAST_STEP, score="capacity_mean") for label, method in ABLATION),
        *(Cell(label, ACCURACY, method, LAST_STEP) for label, method in ABLATION),
    ),
    presets=preset_set("adaq_split", _split(), _split_paper(), _split_tiny()),
    runs_of="adaq_split",
    paper_setting="s-CIFAR100 reduced AlexNet",
    paper_source="Table 4, capacity (Table 5: accuracy)",
    paper=ADAQ_PAPER.id,
    order="all",
    paper_claims=(
        (("Quantization only", ACCURACY), ("Pruning only", ACCURACY),
         "Results in Table 5 show that quantization yields higher accuracy than pruning."),
    ),
    notes=("Pruning only keeps fp32 values (32 bits at each kept position); quantization only gives the task "
           "every free position (no search) and lowers its bits. Runs on adaq_split's split and presets "
           "(Ada-QPacknet's row is that table's run). Paper numbers beside ours are s-CIFAR-100's.",),
))
