"""Errors that carry a message meant for the person running the pipeline.

The CLI prints `str(error)` and exits with `exit_code`; no stack trace is needed to understand them.
"""


class PipelineError(Exception):
    """A failure the user can act on: the message says what, where and what was expected."""

    exit_code = 1


class UsageError(PipelineError):
    """A command line that asks for something the verb does not do (exit code 64, as argparse's own)."""

    exit_code = 64


class ConfigError(PipelineError):
    """A campaign or environment file is missing, unreadable or invalid (exit code 2)."""

    exit_code = 2


class InputError(PipelineError):
    """Landing input cannot be used as a whole (missing folder, file without a required column)."""

    exit_code = 3


class SchemaError(PipelineError):
    """A DataFrame or an existing Delta table does not match the table catalog."""

    exit_code = 4


class VersionError(PipelineError):
    """pyspark and Delta Lake versions that do not work together."""

    exit_code = 5


class WriteConflictError(PipelineError):
    """Concurrent writers kept conflicting with a commit after its bounded retries (exit code 7)."""

    exit_code = 7


class PreflightError(PipelineError):
    """notify cannot send a wave (a missing secret, an unreachable gateway or queue); the wave was
    not taken, so no attempt of it is spent (exit code 8)."""

    exit_code = 8


def first_line(exc: BaseException, limit: int = 300) -> str:
    """`Type: first line` of an exception; for a JVM error raised through py4j, the JVM's exception."""
    java = getattr(exc, "java_exception", None)
    text = str(java.toString()) if java is not None else str(exc)
    line = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {line[:limit]}" if line else type(exc).__name__
