"""One writer per run folder: two sweeps into the same ``--out`` must not train one run twice at once
(both wrote the same checkpoint and left two TensorBoard event files in one ``tb/``)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

LOCK_NAME = "run.lock"


@contextmanager
def run_lock(run_dir: Path, log: Callable[[str], None], who: str) -> Iterator[None]:
    """Hold ``run_dir/run.lock`` while the run is read or trained. If another process holds it,
    say so once (``log``) and wait: its run then reads as finished or resumes where it stopped.

    An operating-system file lock (``filelock``, flock on Linux) is released when its process
    dies, so a killed sweep never leaves a stale lock behind.
    """
    from filelock import FileLock, Timeout

    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log(f"{who} another sweep is running it (lock {run_dir / LOCK_NAME}); waiting for it to finish")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
