"""TensorBoard's HParams dashboard for a sweep: one session per run, with its final numbers.

Each finished run writes ``<run>/hparams/`` (an event file of its own, so
``tensorboard --logdir results/<sweep>`` lists every run in the HParams tab):

* hyperparameters: ``method`` (as named in the sweep), ``method_base`` and
  ``variant/<key>`` for each variant key, ``seed``, ``setting`` (the
  scenario's), every preset field a result depends on (the fields
  ``run_settings`` records; tuples as text) and ``method_kwargs/<key>``;
* metrics: ``final/<score>`` for every score of the setting after the last
  step (in [0, 1]), ``cost/total_sample_passes`` (summed over steps),
  ``memory/bytes_beyond_model`` and ``inference/flops_per_image`` (after the
  last step) and ``time/seconds``.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from avalanche_sst.experiments.presets import NOT_RESULT_FIELDS
from avalanche_sst.experiments.registry import parse_variant

HPARAMS_DIR = "hparams"


def _scalar(value):
    """A value TensorBoard's hparams accept: bool, int, float or str (others as text)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def run_hparams(preset, method_name: str, seed: int) -> dict:
    """The hyperparameters of one run, flat ``{name: bool | int | float | str}``."""
    from avalanche_sst.experiments.scenarios import get_scenario

    base, variant = parse_variant(method_name)
    fields = preset.to_dict()
    hp = {"method": method_name, "method_base": base, "seed": int(seed),
          "setting": get_scenario(preset.scenario).setting}
    hp.update({f"variant/{k}": _scalar(v) for k, v in variant.items()})
    hp.update({k: _scalar(v) for k, v in fields.items() if k not in NOT_RESULT_FIELDS})
    hp.update({f"method_kwargs/{k}": _scalar(v) for k, v in preset.method_kwargs.get(base, {}).items()})
    return hp


def run_metrics(result) -> dict:
    """The metrics of a finished run (a ``RunResult``), flat ``{name: float}``; absent ones left out."""
    metrics = {f"final/{name}": float(v) for name, v in (result.scores[-1] if result.scores else {}).items()}
    if result.costs:
        metrics["cost/total_sample_passes"] = float(sum(result.costs))
    if result.memory:
        metrics["memory/bytes_beyond_model"] = float(result.memory[-1])
    if result.inference:
        metrics["inference/flops_per_image"] = float(result.inference[-1])
    metrics["time/seconds"] = float(result.seconds)
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


def write_hparams(log_dir: Path, hparams: dict, metrics: dict) -> Path:
    """One HParams session in ``log_dir`` (replacing an earlier one there): its hparams and metrics."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    log_dir = Path(log_dir)
    if log_dir.exists():  # a rerun of the same run: one session, not two
        shutil.rmtree(log_dir)
    experiment, start, end = hparams_summary(hparams, metrics)
    with SummaryWriter(log_dir=str(log_dir)) as writer:
        for summary in (experiment, start, end):
            writer.file_writer.add_summary(summary)
        for name, value in metrics.items():  # the dashboard reads a metric's value from its scalar
            writer.add_scalar(name, value)
    return log_dir


def write_run_hparams(run_dir: Path, preset, method_name: str, result) -> Path:
    """The HParams session of a finished sweep run, in ``<run_dir>/hparams``."""
    return write_hparams(Path(run_dir) / HPARAMS_DIR, run_hparams(preset, method_name, result.seed),
                         run_metrics(result))
