"""Live progress of a sweep: one tqdm bar per active run and one for the sweep.

Runs report through :class:`ProgressPlugin`, an Avalanche plugin that turns
the training callbacks into small picklable events (tuples); the driver's
:class:`ProgressDisplay` draws them. In-process the plugin calls the display
directly; under Ray the events travel through an actor (see
:mod:`avalanche_sst.experiments.executor`), so workers never draw anything.

Events:

* ``("start", key, n_steps)``: a run began (``key`` names it, e.g. ``"sst seed 0"``);
* ``("progress", key, fields)``: ``fields`` has ``step``, ``n_steps``, ``phase``,
  ``epoch``, ``n_epochs``, ``iteration`` and ``n_iterations`` (per epoch);
* ``("log", line)``: a result line (printed above the bars);
* ``("end", key)``: the run finished (or failed).
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO

from avalanche.core import SupervisedPlugin

from avalanche_sst.metrics.logging import log_root, phase_name  # noqa: F401 (phase_name: re-exported)

Event = tuple
Report = Callable[[Event], None]


class ProgressPlugin(SupervisedPlugin):
    """Reports phase, epoch and iteration of one run to ``report``, at most every ``min_interval`` s.

    Put it in the ``plugins`` of any template. A composite strategy that runs its
    phases as inner strategies and exposes their shared plugin list as
    ``phase_plugins`` (``MultiStepSST``) gets the plugin added there too, so its
    inner epochs and iterations are reported under the outer run.
    """

    def __init__(self, report: Report, key: str, n_steps: int, min_interval: float = 0.5):
        super().__init__()
        if min_interval < 0:
            raise ValueError(f"min_interval must be >= 0 seconds, got {min_interval}")
        self.report, self.key, self.n_steps, self.min_interval = report, key, int(n_steps), float(min_interval)
        self._last_sent = float("-inf")
        self._fields = dict(step=0, n_steps=self.n_steps, phase="", epoch=0, n_epochs=0,
                            iteration=0, n_iterations=0)

    def _send(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_sent >= self.min_interval:
            self._last_sent = now
            self.report(("progress", self.key, dict(self._fields)))

    def before_training_exp(self, strategy, *args, **kwargs):
        if log_root(strategy) is strategy:
            self._fields["step"] = int(strategy.clock.train_exp_counter) + 1
            inner = getattr(strategy, "phase_plugins", None)
            if isinstance(inner, list) and self not in inner:
                inner.append(self)

    def before_training_epoch(self, strategy, *args, **kwargs):
        try:
            n_iterations = len(strategy.dataloader)
        except TypeError:  # a loader without a length: the bar shows counts only
            n_iterations = 0
        self._fields.update(phase=phase_name(strategy), epoch=int(strategy.clock.train_exp_epochs) + 1,
                            n_epochs=int(strategy.train_epochs), iteration=0, n_iterations=n_iterations)
        self._send(force=True)

    def after_training_iteration(self, strategy, *args, **kwargs):
        self._fields["iteration"] = int(strategy.clock.train_epoch_iterations) + 1
        self._send()

    def before_eval_exp(self, strategy, *args, **kwargs):
        # Only the run's own evaluation: not a phase's validation pass inside training.
        if log_root(strategy) is strategy and not getattr(strategy, "is_training", False):
            try:
                n_iterations = len(strategy.dataloader)
            except TypeError:
                n_iterations = 0
            self._fields.update(phase="eval", epoch=0, n_epochs=0, iteration=0, n_iterations=n_iterations)
            self._send(force=True)

    def after_eval_iteration(self, strategy, *args, **kwargs):
        if self._fields["phase"] == "eval" and log_root(strategy) is strategy:
            self._fields["iteration"] += 1
            self._send()


def bar_description(key: str, fields: dict) -> str:
    """``sst seed 0 | step 2/4 aod | epoch 3/5``: what the run's bar is doing now."""
    text = f"{key} | step {fields['step']}/{fields['n_steps']} {fields['phase']}"
    if fields.get("n_epochs"):
        text += f" | epoch {fields['epoch']}/{fields['n_epochs']}"
    return text


def phase_position(fields: dict) -> tuple[int, Optional[int]]:
    """(iterations done, iterations in the phase) over all its epochs, so the bar's ETA is the phase's.

    Evaluation has no epochs (``n_epochs`` 0): its iterations are those of the experience evaluated.
    """
    per_epoch, epoch = int(fields.get("n_iterations", 0)), int(fields.get("epoch", 0))
    n_epochs = int(fields.get("n_epochs", 0))
    done = max(epoch - 1, 0) * per_epoch + int(fields.get("iteration", 0))
    total = per_epoch * n_epochs if n_epochs else per_epoch
    return done, (total or None)


class ProgressDisplay:
    """Draws the sweep bar (runs done / total, ETA) and one bar per active run with tqdm.

    ``enabled=None`` draws only on a terminal (logs of a batch job keep just the
    result lines); ``file`` defaults to stderr. ``log`` receives the result lines;
    with the default (``print``) they are written above the bars.
    """

    def __init__(self, total_runs: int, file: Optional[TextIO] = None, enabled: Optional[bool] = None,
                 log: Callable[[str], None] = print, mininterval: float = 0.2):
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self.file = file if file is not None else sys.stderr
        self.enabled = bool(self.file.isatty()) if enabled is None else bool(enabled)
        self._print = log is print
        self.log = log
        self.mininterval = mininterval
        self.bars: dict[str, object] = {}
        self._phase: dict[str, tuple] = {}
        self.sweep = tqdm(total=total_runs, desc="sweep: runs", unit="run", file=self.file,
                          disable=not self.enabled, position=0, dynamic_ncols=True,
                          bar_format="{desc} {n_fmt}/{total_fmt} |{bar}| [{elapsed}<{remaining}]")

    def __call__(self, event: Event) -> None:
        kind = event[0]
        if kind == "log":
            self.write(event[1])
        elif kind == "start":
            self._bar(event[1])
        elif kind == "progress":
            self._progress(event[1], event[2])
        elif kind == "end":
            bar = self.bars.pop(event[1], None)
            self._phase.pop(event[1], None)
            if bar is not None:
                bar.close()
            self.sweep.update(1)
        else:
            raise ValueError(f"unknown progress event {event!r}")

    def write(self, line: str) -> None:
        if self._print:
            self._tqdm.write(line, file=sys.stdout)
        else:
            self.log(line)

    def _bar(self, key: str):
        if key not in self.bars:
            self.bars[key] = self._tqdm(total=None, desc=key, unit="it", file=self.file, leave=False,
                                        disable=not self.enabled, dynamic_ncols=True,
                                        mininterval=self.mininterval)
        return self.bars[key]

    def _progress(self, key: str, fields: dict) -> None:
        bar = self._bar(key)
        done, total = phase_position(fields)
        phase = (fields["step"], fields["phase"])
        new_phase = self._phase.get(key) != phase
        if new_phase:  # restarts the bar's rate and ETA
            self._phase[key] = phase
            bar.reset()
            bar.total = total  # reset(total=None) would keep the old total
        bar.set_description_str(bar_description(key, fields), refresh=False)
        bar.update(done - bar.n)  # update(), not n=: tqdm's rate and ETA follow the increments
        if new_phase:
            bar.refresh()  # show a new phase at once, however short

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
        self.sweep.close()

    def __enter__(self) -> "ProgressDisplay":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
