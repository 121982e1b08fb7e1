"""Evaluation and logging: Avalanche's EvaluationPlugin and loggers, plus method scalars."""

from .logging import EventLog, log_histogram, log_root, log_scalar, make_evaluator
from .validation import accuracy

__all__ = ["EventLog", "accuracy", "log_histogram", "log_root", "log_scalar", "make_evaluator"]
