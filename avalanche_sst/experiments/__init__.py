"""Sweeps over methods and seeds, presets and result tables."""

import warnings

# Avalanche imports qpsolvers for GEM's quadratic program at start-up, which warns on
# every run (and every Ray worker) that no solver is installed; no method here uses GEM.
warnings.filterwarnings("ignore", message="no QP solver found", category=UserWarning)
