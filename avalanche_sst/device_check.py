"""Device discipline without a GPU: run code as if its model were on CUDA, and catch device mixes.

:class:`SimulatedCuda` is a ``TorchFunctionMode``. Inside it, whatever code
asks for ``cuda`` (``model.to("cuda")``, ``torch.zeros(..., device=p.device)``,
``x.cuda()``) gets a CPU tensor *tagged* as CUDA, whose ``.device`` reads
``cuda:0``; tensors made without a device (``torch.zeros(n)``,
``torch.tensor(...)``), or moved with ``.cpu()`` / ``.to("cpu")``, are tagged
CPU, and so is what ``torch.load`` reads onto the CPU (``map_location="cpu"``,
as our checkpoints are read), since it lands there on a real GPU machine too.
Every operation's output inherits its inputs' tag. An operation that mixes a
CUDA-tagged tensor with a CPU-tagged one of one or more dimensions
(real CUDA accepts 0-dimensional CPU scalars, CPU index tensors and
cross-device copies, and so does this check) is recorded as a violation with
its stack, as would the ``RuntimeError: Expected all tensors to be on the
same device`` of a real GPU; so is ``.numpy()`` of a CUDA-tagged tensor.
Tensors whose origin the mode did not see (autograd's gradients, data made
before it started) are left untagged and never blamed.

Why not ``FakeTensorMode`` (``torch._subclasses.fake_tensor``), which holds
real fake CUDA tensors: it has no values, so every ``.item()`` / ``float(loss)``
raises (Avalanche's metrics, the methods' decisions on validation accuracy,
pruning thresholds all read values), and Avalanche's templates cannot run
under it. This mode computes on the CPU for real, so whole runs, checkpoints
and resumes run under it unchanged.
"""

from __future__ import annotations

import traceback
from typing import Any, Iterator

import torch
from torch.overrides import TorchFunctionMode

_TAG = "_device_check_tag"  # "cuda" or "cpu", set on tensor objects
CUDA = torch.device("cuda", 0)

_DEVICE_GET = torch.Tensor.device.__get__
_DATA_SET = torch.Tensor.data.__set__
# Operations real CUDA allows across devices (copies, indexing with CPU indices, moves).
_MIXING_ALLOWED = {torch.Tensor.copy_, torch.Tensor.__deepcopy__, torch._has_compatible_shallow_copy_type,
                   torch.Tensor.to, torch.Tensor.__getitem__, torch.Tensor.__setitem__, torch.Tensor.index_put_,
                   torch.Tensor.cpu, torch.Tensor.cuda, torch.Tensor.__repr__, torch.Tensor.__format__}
_FACTORIES = {torch.zeros, torch.ones, torch.empty, torch.full, torch.rand, torch.randn, torch.randint,
              torch.randperm, torch.arange, torch.linspace, torch.eye, torch.tensor, torch.as_tensor}


def _tag(t) -> str | None:
    return t.__dict__.get(_TAG) if isinstance(t, torch.Tensor) else None


def _set_tag(value, tag: str):
    for t in _tensors(value):
        t.__dict__[_TAG] = tag
    return value


def _tensors(value) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            if isinstance(v, torch.Tensor):
                yield v
    elif isinstance(value, dict):
        for v in value.values():
            if isinstance(v, torch.Tensor):
                yield v


def _nested_tensors(value) -> Iterator[torch.Tensor]:
    """Every tensor in nested dicts, lists and tuples (a checkpoint's state)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _nested_tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _nested_tensors(v)


def _is_cuda(device) -> bool:
    if device is None or isinstance(device, torch.dtype):
        return False
    try:
        return torch.device(device).type == "cuda"
    except (RuntimeError, TypeError):
        return False


def _is_device(value) -> bool:
    if not isinstance(value, (str, torch.device)):
        return False
    try:
        torch.device(value)
        return True
    except (RuntimeError, TypeError):
        return False


class DeviceMixError(RuntimeError):
    """A CUDA-meant tensor met a CPU one (raised by :meth:`SimulatedCuda.check`)."""


class SimulatedCuda(TorchFunctionMode):
    """Computes on the CPU, tags tensors as CUDA or CPU, records every op that mixes the two.

    ``raise_at_once``: raise :class:`DeviceMixError` at the offending op (its
    traceback is the culprit's); otherwise collect them in ``violations``.
    """

    def __init__(self, raise_at_once: bool = False):
        super().__init__()
        self.raise_at_once = raise_at_once
        self.violations: list[str] = []

    def __enter__(self):
        # nn.Parameter(data) makes a new tensor object the mode does not see (a parameter's
        # creation and deepcopy): it takes the tag of its data, as a real parameter its device
        self._parameter_new = torch.nn.Parameter.__dict__["__new__"]
        original = self._parameter_new.__func__ if isinstance(self._parameter_new, staticmethod) \
            else self._parameter_new

        def new(cls, data=None, requires_grad=True):
            param = original(cls, data, requires_grad)
            if _tag(data) is not None:
                param.__dict__[_TAG] = _tag(data)
            return param

        torch.nn.Parameter.__new__ = staticmethod(new)
        # a state read back onto the CPU stays there on a real GPU until code moves it: a method
        # that computes with it beside CUDA weights after a resume fails there, so it is tagged CPU
        self._torch_load = load = torch.load

        def load_tagged(*args, **kwargs):
            state = load(*args, **kwargs)
            location = kwargs["map_location"] if "map_location" in kwargs else (args[1] if len(args) > 1 else None)
            if _is_device(location) and not _is_cuda(location):
                for t in _nested_tensors(state):
                    t.__dict__[_TAG] = "cpu"
            return state

        torch.load = load_tagged
        return super().__enter__()

    def __exit__(self, *exc):
        torch.nn.Parameter.__new__ = self._parameter_new
        torch.load = self._torch_load
        return super().__exit__(*exc)

    def check(self) -> None:
        """Raise :class:`DeviceMixError` listing the violations, if any."""
        if self.violations:
            raise DeviceMixError(f"{len(self.violations)} operation(s) mixed CUDA and CPU tensors; first:\n"
                                 + self.violations[0])

    def _violation(self, text: str) -> None:
        stack = "".join(traceback.format_stack(limit=14)[:-2])
        self.violations.append(f"{text}\n{stack}")
        if self.raise_at_once:
            raise DeviceMixError(text)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func == _DEVICE_GET:
            return CUDA if _tag(args[0]) == "cuda" else func(*args)
        if func == _DATA_SET:
            func(*args)
            if _tag(args[1]) is not None:
                _set_tag(args[0], _tag(args[1]))
            return None
        to_cuda = to_cpu = False
        if "device" in kwargs:
            to_cuda, to_cpu = _is_cuda(kwargs["device"]), not _is_cuda(kwargs["device"])
            if kwargs["device"] is None:
                to_cpu = False
            elif to_cuda:
                kwargs["device"] = "cpu"
        if func in (torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.cpu):
            args = list(args)
            targets = args[1:]
            if func is torch.Tensor.cuda:
                to_cuda, func, targets = True, torch.Tensor.to, []
                args, kwargs = [args[0], "cpu"], {k: v for k, v in kwargs.items() if k == "non_blocking"}
            elif func is torch.Tensor.cpu:
                to_cpu = True
            for i, a in enumerate(targets, start=1):
                if isinstance(a, torch.Tensor):  # x.to(other): other's device
                    to_cuda, to_cpu = _tag(a) == "cuda", _tag(a) != "cuda"
                elif _is_device(a):
                    to_cuda, to_cpu = _is_cuda(a), not _is_cuda(a)
                    if to_cuda:
                        args[i] = "cpu"
        tensors = [t for a in (*args, *kwargs.values()) for t in _tensors(a)]
        tags = {_tag(t) for t in tensors if _tag(t) == "cuda" or (_tag(t) == "cpu" and t.dim() > 0)}
        if tags == {"cuda", "cpu"} and func not in _MIXING_ALLOWED:
            shapes = [(tuple(t.shape), _tag(t)) for t in tensors if _tag(t)]
            self._violation(f"{getattr(func, '__name__', func)} mixes CUDA and CPU tensors {shapes}")
        if func is torch.Tensor.numpy and _tag(args[0]) == "cuda":
            self._violation("numpy() of a CUDA tensor (call .cpu() first)")
        out = func(*args, **kwargs)
        if args and out is args[0] and not (to_cuda or to_cpu) and isinstance(out, torch.Tensor):
            return out  # an in-place op (copy_, add_, ...) never moves its tensor
        if to_cuda or to_cpu:
            if any(o is t for o in _tensors(out) for t in tensors):  # .to() returned its input: a move copies
                out = out.clone()
            return _set_tag(out, "cuda" if to_cuda else "cpu")
        if "cuda" in tags:
            return _set_tag(out, "cuda")
        if "cpu" in {_tag(t) for t in tensors} or func in _FACTORIES:
            return _set_tag(out, "cpu")
        return out


def run_simulated(fn, *args: Any, **kwargs: Any):
    """``fn(*args, **kwargs)`` under :class:`SimulatedCuda`; raises :class:`DeviceMixError` on a mix."""
    mode = SimulatedCuda()
    with mode:
        result = fn(*args, **kwargs)
    mode.check()
    return result
