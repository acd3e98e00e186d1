"""User-facing errors: each carries one clear message; the CLI prints it without a traceback."""


class KGDistillError(Exception):
    """Base class of errors caused by user input (files, options, run folders).

    ``exit_code``: the CLI's exit status for it: 2 for bad input (an option, a file, a name: usage), 1 for a valid
    request that failed (training diverged, another process holds the run folder).
    """

    exit_code: int = 2


class DataError(KGDistillError):
    """A data file is malformed or missing; the message names the file, the line and what was expected."""


class ConfigError(KGDistillError):
    """A configuration key or value is wrong; the message names the key and the allowed keys or values."""


class RunFolderError(KGDistillError):
    """A run folder is incomplete or inconsistent."""


class TrainingDivergedError(KGDistillError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 1
