"""Tests of M2KD (Zhou et al., BMVC 2020): losses, snapshot reconstruction, pruning schedule, strategies."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from avalanche.training.losses import ICaRLLossPlugin
from avalanche.training.plugins import EvaluationPlugin

from avalanche_sst.benchmarks import class_incremental, task_incremental
from avalanche_sst.functional.m2kd_losses import ad_loss, m2kd_loss, mmd_loss, mmd_targets
from avalanche_sst.models import build_model
from avalanche_sst.functional.ownership import FREE, OWNER_BUFFER
from avalanche_sst.plugins.m2kd import M2KDModel, M2KDPlugin, exemplar_bytes, m2kd_memory_bytes
from avalanche_sst.strategies.m2kd import M2KD, ICaRLM2KD

from conftest import make_images


def bce(s, t):
    return -(t * math.log(s) + (1 - t) * math.log(1 - s))


# ------------------------------------------------------------------ losses
def test_mmd_hand_value():
    # one sample, units [old | current]; scores sigmoid(ln 3) = 0.75 and sigmoid(0) = 0.5
    logits = torch.tensor([[math.log(3.0), 0.0]])
    teacher = torch.tensor([[0.25, 0.9]])  # the teacher's unit 1 is not its own: ignored
    got = mmd_loss(logits, torch.tensor([1]), [teacher], [1, 2])
    assert got.item() == pytest.approx((bce(0.75, 0.25) + bce(0.5, 1.0)) / 2, rel=1e-6)


def test_mmd_with_one_snapshot_equals_avalanche_icarl_loss():
    logits = torch.tensor([[0.3, -1.2, 2.0, 0.1, 0.5], [1.5, 0.2, -0.7, 0.9, -2.0]])
    old_logits = torch.tensor([[1.0, -0.5, 0.3, 0.0, 0.0], [-0.2, 0.8, 0.6, 0.0, 0.0]])
    labels = torch.tensor([3, 4])
    icarl = ICaRLLossPlugin()
    icarl.old_classes = [0, 1, 2]
    icarl.old_logits = old_logits
    expected = icarl(logits, labels)
    got = mmd_loss(logits, labels, [torch.sigmoid(old_logits)], [3, 5])
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)


def test_mmd_targets_take_each_snapshot_on_its_own_units_and_future_units_get_no_loss():
    t0 = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    t1 = torch.tensor([[0.5, 0.6, 0.7, 0.8]])
    targets = mmd_targets(torch.tensor([3]), [t0, t1], [1, 3, 4])
    assert targets.tolist() == [[pytest.approx(0.1), pytest.approx(0.6), pytest.approx(0.7), 1.0]]
    logits = torch.randn(1, 4)
    wider = torch.cat([logits, torch.tensor([[50.0, -50.0]])], 1)  # two future units
    assert torch.equal(mmd_loss(logits, torch.tensor([3]), [t0, t1], [1, 3, 4]),
                       mmd_loss(wider, torch.tensor([3]), [t0, t1], [1, 3, 4]))
    with pytest.raises(ValueError, match="teacher"):
        mmd_loss(logits, torch.tensor([3]), [t0], [1, 3, 4])
    with pytest.raises(ValueError, match="increasing"):
        mmd_loss(logits, torch.tensor([3]), [t0, t1], [1, 1, 4])
    with pytest.raises(ValueError, match="grow the head"):
        mmd_loss(logits[:, :3], torch.tensor([2]), [t0, t1], [1, 3, 4])


def test_ad_loss_hand_value_and_total():
    aux = torch.tensor([[math.log(3.0), 0.0]])
    got = ad_loss(aux, torch.tensor([1]), [torch.tensor([[0.25, 0.0]])], [1, 2], alpha=0.5)
    distill = bce(0.75, 0.25)
    labels = bce(0.75, 0.0) + bce(0.5, 1.0)  # over ALL seen units
    assert got.item() == pytest.approx((distill + 0.5 * labels) / 2, rel=1e-6)
    # first step: only the label term
    got0 = ad_loss(aux, torch.tensor([1]), [], [2], alpha=0.5)
    assert got0.item() == pytest.approx(0.5 * labels / 2, rel=1e-6)
    assert m2kd_loss(torch.tensor(1.0), torch.tensor(3.0), lam=2.0).item() == 7.0
    with pytest.raises(ValueError, match="lam"):
        m2kd_loss(torch.tensor(1.0), torch.tensor(3.0), lam=-1.0)


def test_memory_accounting_hand_count():
    # 1000 owned weights (1 byte each) + two snapshots of 40 and 60 bytes
    assert m2kd_memory_bytes(1000, [40, 60]) == 1100
    # 2000 CIFAR exemplars of 3x32x32 uint8
    assert exemplar_bytes(2000, (3, 32, 32)) == 2000 * 3072
    with pytest.raises(ValueError):
        exemplar_bytes(-1, (3, 32, 32))


# ------------------------------------------------------------------ training harness
def _bench(steps=3, task=False):
    train, test = make_images(12, seed=0, classes=2 * steps), make_images(4, seed=1, classes=2 * steps)
    build = task_incremental if task else class_incremental
    return build(train, test, classes_per_step=2, seed=0, augment=False)


def _strategy(prune_ratio=0.5, epochs=2, finetune=1, model=None, **kw):
    torch.manual_seed(0)
    model = model or build_model("resnet8-w2", num_classes=2, in_channels=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return M2KD(model=model, optimizer=opt, prune_ratio=prune_ratio, finetune_epochs=finetune, train_mb_size=16,
                train_epochs=epochs, eval_mb_size=32, evaluator=EvaluationPlugin(loggers=[]), **kw)


def _run(strategy, bench, steps, on_step=None):
    for k, exp in enumerate(bench.train_stream[:steps]):
        torch.manual_seed(100 + k)
        strategy.train(exp, eval_streams=[])
        if on_step:
            on_step(k)


def _x():
    return make_images(3, seed=5, classes=6).images.float()[:8] / 255


def test_ownership_shares_follow_the_pruning_schedule():
    bench = _bench(3)
    s = _strategy(prune_ratio=0.5)
    counts = []
    _run(s, bench, 3, lambda k: counts.append(
        {n: [int((getattr(m, OWNER_BUFFER) == j).sum()) for j in (0, 1, 2, FREE)]
         for n, m in s.m2kd._layers()}))
    assert not any(hasattr(m, OWNER_BUFFER) for m in s.m2kd.network.head.modules())  # heads stay per snapshot
    assert not any(hasattr(m, OWNER_BUFFER) for m in s.m2kd.network.aux_head.modules())
    conv1 = "features.conv1"  # 2 x 1 x 3 x 3 = 18 weights
    # hand count, r = 0.5: step 0 keeps 18 - 9 = 9; step 1 keeps 9 - round(4.5) = 5; step 2 keeps 4 - 2 = 2
    assert counts[0][conv1] == [9, 0, 0, 9]
    assert counts[1][conv1] == [9, 5, 0, 4]
    assert counts[2][conv1] == [9, 5, 2, 2]
    for name, per_step in counts[2].items():
        n, expected = sum(per_step), []
        free = n
        for _ in range(3):
            keep = free - round(0.5 * free)
            expected.append(keep)
            free -= keep
        assert per_step == [*expected, free], name


def _with_copies(strategy, bench, steps=3):
    copies = []
    _run(strategy, bench, steps, lambda k: copies.append(copy.deepcopy(strategy.m2kd.network).eval()))
    return copies


def test_reconstructed_snapshots_equal_the_models_saved_at_their_step():
    bench, x = _bench(3), _x()
    s = _strategy()
    copies = _with_copies(s, bench)
    for k in range(3):
        main, aux = s.m2kd.snapshot_forward(k, x)
        ref_main, ref_aux = copies[k](x, with_aux=True)
        assert torch.allclose(main, ref_main, atol=1e-6) and torch.allclose(aux, ref_aux, atol=1e-6), k
    # the current network has moved on: snapshot 0 is not the current model
    assert not torch.allclose(copies[0](x), copies[2](x)[:, : copies[0](x).shape[1]], atol=1e-3)


def test_reconstruction_breaks_without_exact_freezing_when_weight_decay_stays_on():
    """Negative control: gradient masking alone lets weight decay move step 0's weights."""
    bench, x = _bench(2), _x()
    s = _strategy(exact_freeze=False, weight_decay_after=0.05)
    copies = _with_copies(s, bench, 2)
    main, _ = s.m2kd.snapshot_forward(0, x)
    assert (main - copies[0](x)).abs().max() > 1e-4


def test_exact_freezing_survives_weight_decay():
    bench, x = _bench(2), _x()
    s = _strategy(weight_decay_after=0.05)
    copies = _with_copies(s, bench, 2)
    assert torch.allclose(s.m2kd.snapshot_forward(0, x)[0], copies[0](x), atol=1e-6)


def test_state_dict_round_trip_restores_every_snapshot_with_weights_only():
    bench, x = _bench(2), _x()
    s = _strategy()
    _run(s, bench, 2)
    buf = io.BytesIO()
    torch.save({"model": s.model.state_dict(), "m2kd": s.m2kd.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    fresh = _strategy()
    fresh.m2kd.rebuild_model(saved["m2kd"])
    fresh.model.load_state_dict(saved["model"])
    fresh.m2kd.load_state_dict(saved["m2kd"])
    for k in range(2):
        for a, b in zip(s.m2kd.snapshot_forward(k, x), fresh.m2kd.snapshot_forward(k, x)):
            assert torch.equal(a, b)
    assert fresh.m2kd.memory_bytes() == s.m2kd.memory_bytes() > 0


def test_no_pruning_stores_full_snapshots_and_trains_every_weight():
    bench, x = _bench(2), _x()
    s = _strategy(prune_ratio=0.0)
    copies = _with_copies(s, bench, 2)
    assert all(bool((getattr(m, OWNER_BUFFER) == FREE).all()) for _, m in s.m2kd._layers())
    assert torch.allclose(s.m2kd.snapshot_forward(0, x)[0], copies[0](x), atol=1e-6)
    assert "features.conv1.weight" in s.m2kd.snapshots[0]


def test_bad_input_errors():
    with pytest.raises(ValueError, match=r"prune_ratio must be in \[0, 1\)"):
        M2KDPlugin(prune_ratio=1.0)
    with pytest.raises(ValueError, match="prune_ratio"):
        M2KDPlugin(prune_ratio=-0.1)
    flat = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    flat.fc = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="stage 2"):
        M2KDModel(flat)
    with pytest.raises(ValueError, match="class-incremental"):
        _run(_strategy(), _bench(2, task=True), 2)  # experience 1 has task label 1
    with pytest.raises(ValueError, match="class-incremental"):
        M2KDPlugin(setting="task_incremental")
    with pytest.raises(ValueError, match="finetune_epochs"):
        _run(_strategy(epochs=1, finetune=1), _bench(2), 1)


def test_lwf_mc_keeps_only_the_last_snapshot():
    bench = _bench(3)
    s = _strategy(prune_ratio=0.0, lam=0.0, teachers="last")
    _run(s, bench, 3)
    assert [bool(snap) for snap in s.m2kd.snapshots] == [False, False, True]
    assert not hasattr(s.m2kd.network, "aux_head")


def test_icarl_m2kd_runs_with_m2kd_losses():
    bench = _bench(2)
    torch.manual_seed(0)
    model = build_model("resnet8-w2", num_classes=2, in_channels=1)
    s = ICaRLM2KD(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), memory_size=8,
                  prune_ratio=0.5, finetune_epochs=1, train_mb_size=16, train_epochs=2,
                  eval_mb_size=32, evaluator=EvaluationPlugin(loggers=[]))
    assert s._criterion is s.m2kd and not any(isinstance(p, ICaRLLossPlugin) for p in s.plugins)
    _run(s, bench, 2)
    assert s.m2kd.boundaries == [2, 4]
    owner = s.m2kd.network.features.conv1.owner_id
    assert int((owner == 0).sum()) == 9 and int((owner == 1).sum()) == 5
    s.eval(bench.test_stream[:2])


# ------------------------------------------------------------------ sweep registration and resume
def _sweep_run(name, bench, steps, state=None):
    from avalanche_sst.experiments.methods import StrategyContext, get_method
    from avalanche_sst.experiments.presets import Preset

    preset = Preset(epochs_scratch=2, epochs_finetune=2, lr_scratch=0.05, lr_finetune=0.01, batch_size=16,
                    eval_batch_size=64, method_kwargs={"icarl": {"memory_size": 12},
                                                       "icarl_m2kd": {"memory_size": 12}})
    method = get_method(name, preset.method_kwargs.get(name.partition(":")[0]))
    torch.manual_seed(0)
    model = build_model("resnet8-w2", num_classes=bench.num_classes, in_channels=1)
    ctx = StrategyContext(model=model, config=preset, evaluator=EvaluationPlugin(loggers=[]),
                          device=torch.device("cpu"), benchmark=bench, seed=0)
    strategy = method.build(ctx)
    start = 0
    if state is not None:
        start = state["step"]
        method.rebuild_model(strategy, state["method"])
        strategy.model.load_state_dict(state["model"])
        method.load_state_dict(strategy, state["method"], list(bench.train_stream)[:start])
        for key, value in state["clock"].items():
            setattr(strategy.clock, key, int(value))
    for step in range(start, steps):
        torch.manual_seed(1000 + step)
        strategy.train(bench.train_stream[step], eval_streams=[], reset_optimizer_state=True)
        strategy.eval(bench.test_stream)
    return method, strategy


@pytest.mark.parametrize("name", ["m2kd", "icarl_m2kd", "icarl", "lwf_mc"])
def test_sweep_method_resumes_mid_stream_bit_identically(name):
    from avalanche_sst.experiments.methods import METHODS

    assert {"m2kd", "lwf_mc", "icarl", "icarl_m2kd"} <= set(METHODS)
    assert METHODS[name].settings == ("class_incremental",)
    bench, x = _bench(3), _x()
    _, straight = _sweep_run(name, bench, 3)
    method, crashed = _sweep_run(name, bench, 2)
    buf = io.BytesIO()
    torch.save({"step": 2, "model": crashed.model.state_dict(), "method": method.state_dict(crashed),
                "clock": {k: v for k, v in vars(crashed.clock).items() if isinstance(v, int)}}, buf)
    buf.seek(0)
    _, resumed = _sweep_run(name, bench, 3, torch.load(buf, weights_only=True))
    straight.model.eval(), resumed.model.eval()
    with torch.no_grad():
        assert torch.equal(straight.model(x), resumed.model(x))
    if name == "m2kd":  # control: with a wrong snapshot 1 the resumed step trains differently
        buf.seek(0)
        state = torch.load(buf, weights_only=True)
        snapshots = state["method"]["m2kd"]["snapshots"]
        snapshots[1] = {**snapshots[1], **{k: v for k, v in snapshots[0].items() if "bn" in k}}
        _, amnesic = _sweep_run(name, bench, 3, state)
        amnesic.model.eval()
        with torch.no_grad():
            assert not torch.allclose(straight.model(x), amnesic.model(x), atol=1e-4)


def test_sweep_variants_are_accepted():
    from avalanche_sst.experiments.methods import get_method

    for variant in ("m2kd:prune_ratio=0", "m2kd:lam=0", "icarl_m2kd:teachers='last',prune_ratio=0",
                    "lwf_mc:lr_factor=10"):
        get_method(variant)
    with pytest.raises(ValueError, match="no argument"):
        get_method("m2kd:prune=0.5")


def test_lr_factor_scales_the_preset_schedule():
    from avalanche_sst.experiments.methods import StrategyContext, get_method
    from avalanche_sst.experiments.presets import Preset

    bench = _bench(2)
    preset = Preset(epochs_scratch=8, epochs_finetune=4, lr_scratch=0.1, lr_finetune=0.01)
    ctx = StrategyContext(model=build_model("resnet8-w2", num_classes=4, in_channels=1), config=preset,
                          evaluator=EvaluationPlugin(loggers=[]), device=torch.device("cpu"), benchmark=bench)
    s = get_method("m2kd:lr_factor=10").build(ctx)
    schedule = s.plugins[0]
    assert schedule.lrs == pytest.approx((1.0, 0.1))
    # 8 training epochs + round(8 * 15 / 80) = 2 fine-tuning epochs (the paper's 15 of 80, scaled)
    assert schedule.epochs == (10, 6) and s.m2kd.finetune_epochs == 2
    with pytest.raises(ValueError, match="lr_factor"):
        get_method("m2kd:lr_factor=0").build(ctx)


def test_paper_tables_set_reaches_five_classes_per_step(capsys):
    """The issue's CIFAR-100 5-classes-per-step setting: the ``paper`` preset (10 per step
    for Fig. 4, 20 for Table 1) with ``--set`` on experiments/paper_tables.py."""
    import importlib.util
    from pathlib import Path

    from avalanche_sst.experiments.paper import TABLES

    path = Path(__file__).resolve().parents[1] / "experiments" / "paper_tables.py"
    spec_ = importlib.util.spec_from_file_location("paper_tables_cli_m2kd", path)
    cli = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(cli)
    assignment = ["scenario_kwargs={'classes_per_step': 5}"]
    for tid, default in (("m2kd_fig4", 10), ("m2kd_table1", 20)):
        preset = TABLES[tid].preset("paper")
        assert preset.scenario_kwargs == {"classes_per_step": default}
        changes = cli.set_changes(TABLES[tid], "paper", None, assignment)
        assert changes == {"scenario_kwargs": {"classes_per_step": 5}}
        changed = preset.replace(**changes)
        assert (changed.dataset, changed.model, changed.scenario_kwargs["classes_per_step"]) == \
            ("cifar100", "resnet32", 5)
    assert cli.main(["--list", "--preset", "paper", "--set", *assignment]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("m2kd_")]
    assert len(listed) == 4 and all("classes_per_step=5" in line for line in listed)  # fig4, table1, 2 ladders
    with pytest.raises(SystemExit):
        cli.main(["m2kd_fig4", "--set", "clases_per_step=5"])
    assert "the preset has no field 'clases_per_step'" in capsys.readouterr().err
