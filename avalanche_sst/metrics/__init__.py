"""Evaluation and logging: Avalanche's EvaluationPlugin and loggers, plus method scalars."""

from .logging import EventLog, log_histogram, log_scalar, make_evaluator

__all__ = ["EventLog", "log_histogram", "log_scalar", "make_evaluator"]
