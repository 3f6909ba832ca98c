"""Exception classes shared by every package (no imports, so anything may raise them).

:class:`UserInputError` marks a ``ValueError`` raised by the library's own validation of
something a user gave (a target, a weights file, a metric name, a source spec): the
command-line tools (:mod:`detect.cli`) print such an error as one line, while a bare
``ValueError`` from a genuine bug keeps its traceback. It subclasses ``ValueError`` so
that existing ``except ValueError`` code keeps working.
"""
from __future__ import annotations


class UserInputError(ValueError):
    """A value, file or option the user gave is wrong; the message says which and how to fix it."""
