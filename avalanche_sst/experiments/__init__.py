"""Sweeps over methods and seeds, presets and result tables."""
