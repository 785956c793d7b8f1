"""User-facing errors: each is printed as one line and ends the program with exit code 2."""


class UserError(Exception):
    """Something the user can fix (a config value, a missing file); never a bug in ms_resnet."""


class ConfigError(UserError):
    """An invalid config file, key or value."""


class DataError(UserError):
    """A dataset file that is missing, truncated or in the wrong format."""


class CheckpointError(UserError):
    """A checkpoint that cannot be read or does not fit the network."""


class TrainingDiverged(UserError):
    """The training loss became NaN or infinite."""


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM: training stopped after saving last.ckpt (exit code 130)."""


class WorkerFailed(Exception):
    """A data-parallel worker stopped mid-training (a collective failed or timed out): printed
    as one `error: rank N stopped at ...` line, exit code 1 (see ms_resnet.msrun_report)."""
