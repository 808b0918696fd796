"""Errors a user can act on.

Every error raised for bad input names where the problem is: the file, row
and column for a data file, or the config key for a setting.  Jobs catch
:class:`McMarginError`, print its message and exit non-zero, without a
Python traceback.
"""

from __future__ import annotations


class McMarginError(Exception):
    """Base class of the errors a user can fix by changing inputs or config."""


class InputError(McMarginError, ValueError):
    """A data file is malformed.

    Parameters
    ----------
    file : str
        File name (or table name when the table was built in memory).
    message : str
        What is wrong.
    row : int, optional
        Row as a spreadsheet shows the file: the header is row 1, the first
        record row 2 (for CSV this is the line number).
    column : str, optional
        Column name.
    """

    def __init__(self, file: str, message: str, row: int | None = None, column: str | None = None):
        self.file, self.row, self.column, self.reason = file, row, column, message
        where = [f"file {file}"]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}")

    @classmethod
    def from_yaml(cls, file: str, exc: Exception, what: str = "not valid YAML") -> "InputError":
        """One line for a YAML parser's error (PyYAML's spans several, with the text quoted).

        The row is the line of the problem (1-based), the message PyYAML's
        problem, e.g. ``file x.yaml, row 3: not valid YAML: mapping values
        are not allowed here (column 5)``.
        """
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc)
        problem = " ".join(str(problem).split())
        if mark is None:
            return cls(file, f"{what}: {problem}")
        return cls(file, f"{what}: {problem} (column {mark.column + 1})", row=mark.line + 1)


class ConfigError(McMarginError, ValueError):
    """A configuration value is invalid; ``key`` is its dotted config key."""

    def __init__(self, key: str, message: str):
        self.key, self.reason = key, message
        # A key from a user's YAML may hold a newline or a control character: shown escaped, on one line.
        shown = key if str(key).isprintable() else repr(str(key))
        super().__init__(f"config key {shown}: {message}")


class ResultError(McMarginError):
    """A run's figures failed the final check before writing (e.g. a non-finite margin).

    ``variable`` is the dataset variable and ``label`` the first account (or
    group, instrument ...) where the check failed.
    """

    def __init__(self, variable: str, label: str, message: str):
        self.variable, self.label, self.reason = variable, label, message
        super().__init__(f"variable {variable} at {label}: {message}; nothing was written")
