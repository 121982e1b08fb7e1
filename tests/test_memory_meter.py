"""Memory beyond the model (avalanche_sst.metrics.memory): hand counts per method, recorded per step."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.models import IncrementalClassifier
from torch import nn

from avalanche_sst.experiments.methods import get_method
from avalanche_sst.experiments.presets import Preset
from avalanche_sst.experiments.sweep import run_sweep
from avalanche_sst.metrics.memory import dataset_bytes, memory_beyond_model, tensor_bytes
from avalanche_sst.models.quantized_multitask import QuantizedMultiTaskModel


def test_tensor_bytes_counts_each_storage_once():
    a = torch.zeros(3)  # 12 bytes
    state = {"a": a, "view": a[1:], "nested": [torch.zeros(5, dtype=torch.uint8), {"n": 7, "s": "x"}]}
    assert tensor_bytes(state) == 12 + 5
    assert tensor_bytes({"d": torch.zeros(2, dtype=torch.float64)}) == 16


def test_dataset_bytes_is_samples_times_input_plus_label(make_data):
    data = make_data(3, classes=2)  # 6 uint8 images of 1x8x8
    assert dataset_bytes(data) == 6 * (64 + 8)
    assert dataset_bytes(None) == 0


class KeepStrategy(SupervisedPlugin):
    """Keeps each run's strategy, for counting its model by hand after the sweep."""

    def __init__(self, store: dict, key):
        super().__init__()
        self.store, self.key = store, key

    def before_training_exp(self, strategy, **kwargs):
        self.store[self.key] = strategy


@pytest.fixture(scope="module")
def memory_sweep(tmp_path_factory, make_data):
    out = tmp_path_factory.mktemp("memory")
    # 4 classes x 40 train, validation 0.2: 128 training samples, 2 classes (64 samples) per step
    data = (make_data(40, seed=0), make_data(20, seed=1))
    preset = Preset(name="memory", model="resnet8-w4", seeds=(0,), scenario="class_incremental",
                    scenario_kwargs={"classes_per_step": 2},
                    methods=("finetune", "ewc", "lwf", "replay:mem_size=50", "cumulative", "m2kd"),
                    epochs_scratch=1, epochs_finetune=1, batch_size=16, eval_batch_size=64,
                    validation_fraction=0.2, num_threads=1)
    strategies: dict = {}
    results = run_sweep(preset, out, data=data, log=lambda s: None, command="pytest",
                        extra_plugins=lambda m, s: [KeepStrategy(strategies, m)])
    with open(out / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    memory = {(r["method"], int(r["step"])): int(r["memory_bytes"]) for r in rows}
    return dict(results=results, memory=memory, strategies=strategies, out=out)


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def test_baselines_memory_by_hand(memory_sweep):
    memory, strategies = memory_sweep["memory"], memory_sweep["strategies"]
    params = _bytes(strategies["ewc"].model.parameters())  # float32 weights of the network
    whole = _bytes(strategies["lwf"].model.state_dict().values())  # a whole copy, BN statistics included
    assert memory["finetune", 1] == memory["finetune", 2] == 0
    # EWC (separate mode) keeps the parameters and their Fisher importances of every experience
    assert memory["ewc", 1] == 2 * params
    assert memory["ewc", 2] == 4 * params
    # LwF keeps one previous model
    assert memory["lwf", 1] == memory["lwf", 2] == whole
    # Replay: min(mem_size, seen) uint8 1x8x8 images + an int64 label each
    assert memory["replay:mem_size=50", 1] == memory["replay:mem_size=50", 2] == 50 * (64 + 8)
    # Cumulative keeps all the data so far: 64 samples per step
    assert memory["cumulative", 1] == 64 * 72
    assert memory["cumulative", 2] == 128 * 72


def test_m2kd_memory_by_hand(memory_sweep):
    strategy = memory_sweep["strategies"]["m2kd"]
    memory = memory_sweep["memory"]
    state = strategy.model.state_dict()
    owners = {k for k in state if k.endswith(".owner_id")}
    owned = {k[: -len("owner_id")] + "weight" for k in owners}
    ids = sum(state[k].numel() for k in owners)  # one uint8 id per owned weight
    snapshot = _bytes(v for k, v in state.items() if k not in owners and k not in owned)
    # step 1's snapshot was taken when the two heads had 2 of their 4 units (float32 weights and
    # bias, an int8 active-unit flag each)
    heads = [m.classifier for m in strategy.model.modules() if isinstance(m, IncrementalClassifier)]
    assert len(heads) == 2 and all(h.out_features == 4 for h in heads)
    first = snapshot - sum(2 * (4 * (h.in_features + 1) + 1) for h in heads)
    assert ids > 0 and first > 0
    assert memory["m2kd", 1] == ids + first
    assert memory["m2kd", 2] == ids + first + snapshot  # teachers="all": every step's snapshot is kept
    assert memory["m2kd", 2] == strategy.m2kd.memory_bytes()  # the plugin's own Table 2 count agrees


def test_memory_is_in_done_json_and_tensorboard(memory_sweep):
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = memory_sweep["out"] / "ewc" / "seed0"
    done = json.loads((run / "done.json").read_text())
    assert done["memory"] == [memory_sweep["memory"]["ewc", s] for s in (1, 2)]
    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.value for e in acc.Scalars("memory/bytes_beyond_model")] == done["memory"]


def test_ada_qpacknet_memory_by_hand():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))  # quantized: layer 0 (12 weights)
    model = QuantizedMultiTaskModel(net)
    mask = torch.tensor([[True, False, True, True]] * 3)  # 9 of 12 weights kept
    model.begin_task(0, [mask])
    quantized = model.quantize_live(bits=2)
    (book, codes), = quantized
    assert book.numel() == 4 and codes.numel() == 9
    model.commit_task(2, quantized)
    strategy = SimpleNamespace(model=model, plugins=[], method_state=lambda: {"task_reports": []})
    expected = (8  # the task's bit width, int64
                + 12  # its keep mask, one bool per weight
                + 4 * 4 + 9 * codes.element_size()  # codebook (2^2 float32) and a code per kept weight
                + 4 * (3 + 6 + 2)  # fp32 layer-0 bias, head weight and bias of the task
                + 12)  # the used-bit budget, one uint8 per quantized weight
    assert memory_beyond_model(get_method("adaqpacknet"), strategy) == expected


def test_inference_flops_by_hand():
    from avalanche.models import MultiTaskModule

    from avalanche_sst.metrics.inference import inference_flops

    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.ReLU(), nn.Linear(4, 3))
    net.train()
    assert inference_flops(net, (1, 8, 8)) == 2 * 64 * 4 + 2 * 4 * 3  # a multiply-add is 2 FLOPs
    assert net.training  # the flag is restored

    class TwoHeads(MultiTaskModule):
        def __init__(self):
            super().__init__()
            self.heads = nn.ModuleList([nn.Linear(64, 5), nn.Linear(64, 2)])
            self.max_class_label = 5  # the width Avalanche pads every task's output to

        def forward_single_task(self, x, task_label):
            return self.heads[task_label](x.flatten(1))

    assert inference_flops(TwoHeads(), (1, 8, 8)) == 2 * 64 * 5  # task label 0: the first head


def test_runs_csv_records_inference_flops_per_step(memory_sweep):
    from avalanche_sst.metrics.inference import inference_flops

    with open(memory_sweep["out"] / "runs.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["method"] == "finetune"]
    model = memory_sweep["strategies"]["finetune"].model
    assert [int(r["inference_flops"]) for r in rows] == [inference_flops(model, (1, 8, 8))] * 2
