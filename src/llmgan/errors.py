"""User-facing errors.

Every problem caused by the user's input (files, configs, checkpoints) is raised as an
``LLMGanError`` whose message is one line naming the file/field and what was expected. The CLI
prints that line and exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations


class LLMGanError(Exception):
    """A problem with the user's input: the message is shown as-is, on one line."""


class DataError(LLMGanError):
    """Bad data file: missing, empty, binary, wrong encoding, unparsable, over-long."""


class ConfigError(LLMGanError):
    """An impossible or unknown configuration value."""


class CheckpointError(LLMGanError):
    """A missing, corrupt or incompatible checkpoint."""


class TrainingDiverged(LLMGanError):
    """A loss became NaN/inf; the last good checkpoint is kept."""


class ResourceError(LLMGanError):
    """Not enough memory (or another machine resource) for what was asked, even in the smallest pieces."""
