"""Avalanche plugins: one method each."""

from .edge_kt import EdgeKTPlugin, LastConvsOnlyPlugin, edge_trainable_parameters
from .guard import FiniteLossGuard, NonFiniteLossError
from .lwm import LwMPlugin, grad_cam
from .m2kd import M2KDModel, M2KDPlugin
from .msl import MSLPlugin
from .precision import AutocastPlugin, ChannelsLastPlugin, keep_freed_memory
from .reinit import ReinitPlugin, diverse_reinit_
from .schedule import StepwiseCosinePlugin
from .sst import SSTPlugin

__all__ = ["AutocastPlugin", "ChannelsLastPlugin", "EdgeKTPlugin", "LastConvsOnlyPlugin", "edge_trainable_parameters", "FiniteLossGuard", "keep_freed_memory", "LwMPlugin", "grad_cam", "M2KDModel", "M2KDPlugin", "MSLPlugin", "NonFiniteLossError", "ReinitPlugin", "SSTPlugin",
           "StepwiseCosinePlugin", "diverse_reinit_"]
