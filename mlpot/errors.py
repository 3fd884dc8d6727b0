"""Exceptions that mlpot raises for bad input.

Each one derives from :class:`MLPotError`, so a caller can catch every mlpot input error at once,
and from the built-in exception that fits, so ``except ValueError`` keeps working. The command
line prints the message of an ``MLPotError`` without a traceback.
"""

from __future__ import annotations


class MLPotError(Exception):
    """Base class of the errors that mlpot raises for bad input or files."""


class DataError(MLPotError, ValueError):
    """Raised when a structure file is unreadable, a label is missing or invalid, or atoms overlap."""


class MissingLabelError(DataError):
    """Raised when a structure lacks a requested label.

    Attributes:
        label: the label, one of :data:`mlpot.keys.LABELS`.
        key: the name it was looked up under.
        where: the file and frame.
        available: the names the frame does have.
    """

    def __init__(self, message: str, label: str, key: str, where: str, available: list[str]):
        super().__init__(message)
        self.label = label
        self.key = key
        self.where = where
        self.available = available


class UnitError(MLPotError, ValueError):
    """Raised when a unit name is unknown or does not fit the quantity."""


class ElementError(MLPotError, ValueError):
    """Raised when a structure contains an element that the model was not trained on."""


class ConfigError(MLPotError, ValueError):
    """Raised when a configuration key is unknown or its value has the wrong type or range."""


class ModelFileError(MLPotError, ValueError):
    """Raised when a model or checkpoint file is missing, truncated, corrupted or not an mlpot file."""
