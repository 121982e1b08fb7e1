"""Avalanche strategies: one method each."""

from .ada_qpacknet import AdaQPackNet
from .aod import AODStrategy, StudentPair
from .dml import DMLStrategy, fresh_init, validation_data
from .edge import EdgeStrategy
from .hpo import DEFAULT_LRS, HPOResult, HPOStrategy, elr_grid, hpo_search
from .m2kd import M2KD, ICaRLExperienceInfo, ICaRLM2KD
from .multi_step_sst import SST_PLUS_OPTIONS, MultiStepSST

__all__ = ["AdaQPackNet", "AODStrategy", "DEFAULT_LRS", "DMLStrategy", "EdgeStrategy", "HPOResult", "HPOStrategy", "ICaRLExperienceInfo", "ICaRLM2KD", "M2KD", "MultiStepSST", "SST_PLUS_OPTIONS", "StudentPair",
           "elr_grid", "fresh_init", "hpo_search", "validation_data"]
