"""Avalanche plugins: one method each."""

from .guard import FiniteLossGuard, NonFiniteLossError
from .lwm import LwMPlugin, grad_cam
from .msl import MSLPlugin
from .reinit import ReinitPlugin, diverse_reinit_
from .schedule import StepwiseCosinePlugin
from .sst import SSTPlugin

__all__ = ["FiniteLossGuard", "LwMPlugin", "grad_cam", "MSLPlugin", "NonFiniteLossError", "ReinitPlugin", "SSTPlugin",
           "StepwiseCosinePlugin", "diverse_reinit_"]
