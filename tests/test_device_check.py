"""Device discipline without a GPU: every registered method runs a few iterations, a checkpoint
and a resume as if on CUDA (avalanche_sst.device_check), and a method that keeps CPU state is caught.
On a machine with a GPU the same tiny runs also go for real on CUDA, resumed and uninterrupted."""

from __future__ import annotations

import pytest
import torch

from avalanche_sst.device_check import CUDA, DeviceMixError, SimulatedCuda, run_simulated
from avalanche_sst.experiments.methods import METHODS, parse_variant
from avalanche_sst.experiments.paper import TABLES
from avalanche_sst.experiments.paper.specs import sweep_groups
from avalanche_sst.experiments.preflight import run_with_resume
from avalanche_sst.experiments.sweep import build_benchmark, run_one
from conftest import make_images


def _first_use_of_each_method() -> dict:
    """method -> (table, variant, tiny preset of that sweep): the first tiny table that runs it."""
    found = {}
    for table_id, spec in TABLES.items():
        for overrides, methods in sweep_groups(spec, "tiny").items():
            for name in methods:
                preset = spec.preset("tiny").replace(**dict(overrides))
                found.setdefault(parse_variant(name)[0], (table_id, name, preset))
    return found


USES = _first_use_of_each_method()


def _tiny(preset, device="cuda"):
    """The tiny preset on 4 generated classes of 8x8 images, on (simulated) cuda."""
    kwargs = dict(preset.scenario_kwargs)
    if "base_classes" in kwargs:
        kwargs["base_classes"] = 3
    return preset.replace(train_fraction=1.0, test_fraction=1.0, batch_size=16, eval_batch_size=16,
                                           scenario_kwargs=kwargs, device=device, seeds=(0,))


def _tiny_data():
    return make_images(12, seed=0), make_images(6, seed=1)


def _run_interrupted_and_resumed(preset, method, out):
    return run_with_resume(preset, method, build_benchmark(preset, 0, _tiny_data()), out)


def test_every_registered_method_has_a_tiny_table_to_check_it():
    assert set(USES) == set(METHODS)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_keeps_every_tensor_on_the_models_device(method, tmp_path):
    table_id, variant, preset = USES[method]
    result = run_simulated(_run_interrupted_and_resumed, _tiny(preset), variant, tmp_path)
    assert len(result.accuracies) >= 1, (table_id, variant)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; the simulated check above runs here")
@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_resumed_on_a_real_gpu_scores_as_an_uninterrupted_run(method, tmp_path, monkeypatch):
    """The simulated check's promise, for real: each method trains on CUDA, its checkpoint loads
    back onto the GPU, and every score of the resumed run equals the uninterrupted run's.
    cuDNN's deterministic kernels are asked for, as a user who needs equal resumes on a GPU would."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    table_id, variant, preset = USES[method]
    preset = _tiny(preset)
    resumed = _run_interrupted_and_resumed(preset, variant, tmp_path / "resumed")
    straight = run_one(preset, variant, 0, build_benchmark(preset, 0, _tiny_data()), tmp_path / "straight",
                       log=lambda line: None)
    assert len(straight.accuracies) >= 1, (table_id, variant)
    assert resumed.scores == straight.scores, (table_id, variant)
    assert resumed.costs == straight.costs and resumed.memory == straight.memory


# --------------------------------------------------------------------------
# the mode itself, and a method that does it wrong
# --------------------------------------------------------------------------


def test_cuda_meant_tensors_report_cuda_and_a_cpu_operand_is_caught():
    with SimulatedCuda(raise_at_once=True):
        x = torch.ones(3, device="cuda")
        assert x.device == CUDA and (x * 2).device == CUDA
        assert (x + torch.tensor(1.0)).device == CUDA  # a 0-dim CPU scalar is fine on CUDA too
        assert torch.equal((x + x.cpu().cuda()).cpu(), torch.full((3,), 2.0))
        assert torch.zeros(2).device == torch.device("cpu")
        with pytest.raises(DeviceMixError, match="add"):
            x + torch.ones(3)
        with pytest.raises(DeviceMixError, match="numpy"):
            x.numpy()


def test_a_state_read_back_onto_the_cpu_is_cpu_beside_cuda_weights(tmp_path):
    """What a resume reads with map_location="cpu" is on the CPU on a real GPU machine too (M2KD's
    snapshots were, until moved beside the network: only a real GPU showed it before this tag)."""
    torch.save({"snapshots": [{"bn.weight": torch.ones(3)}]}, tmp_path / "checkpoint.pt")
    with SimulatedCuda(raise_at_once=True):
        weight = torch.ones(3, device="cuda")
        state = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=True)
        saved = state["snapshots"][0]["bn.weight"]
        assert saved.device == torch.device("cpu")
        with pytest.raises(DeviceMixError, match="mul"):
            weight * saved
        assert torch.equal((weight * saved.to(weight.device)).cpu(), torch.ones(3))


def test_a_model_moved_to_cuda_is_cuda_and_its_copies_too():
    import copy

    with SimulatedCuda(raise_at_once=True):
        model = torch.nn.Linear(2, 2).to("cuda")
        twin = copy.deepcopy(model)
        assert model.weight.device == CUDA and twin.weight.device == CUDA
        twin(torch.ones(1, 2, device=model.weight.device)).sum().backward()
        with pytest.raises(DeviceMixError, match="linear"):
            twin(torch.ones(1, 2))


class _CpuPenalty:
    """A plugin that keeps its state where ``torch.zeros`` puts it (the CPU), whatever the model's device."""

    def __init__(self):
        from avalanche.core import SupervisedPlugin

        class Plugin(SupervisedPlugin):
            def before_backward(self, strategy, **kwargs):
                anchor = {n: torch.zeros(p.shape) for n, p in strategy.model.named_parameters()}  # the bug
                strategy.loss = strategy.loss + sum(((p - anchor[n]) ** 2).sum()
                                                    for n, p in strategy.model.named_parameters()) * 0.0

        self.plugin = Plugin()


def test_a_method_that_keeps_cpu_state_is_caught(monkeypatch, tmp_path):
    from avalanche.training import Naive

    from avalanche_sst.experiments.methods import Method, common_kwargs

    def build(ctx):
        kwargs = common_kwargs(ctx)
        kwargs["plugins"] = [_CpuPenalty().plugin, *kwargs["plugins"]]
        return Naive(model=ctx.model, **kwargs)

    monkeypatch.setitem(METHODS, "cpu_state", Method("cpu_state", build, "plants a CPU tensor in a CUDA run"))
    preset = _tiny(USES["finetune"][2])
    with pytest.raises(DeviceMixError, match="sub mixes CUDA and CPU"):
        run_simulated(_run_interrupted_and_resumed, preset, "cpu_state", tmp_path)
    # the same method without the planted bug passes
    run_simulated(_run_interrupted_and_resumed, preset, "finetune", tmp_path / "ok")
