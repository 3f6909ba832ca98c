"""What every ``tools/*.py`` shares: one-line errors, ``--debug``, Ctrl+C.

::

    from detect.cli import add_debug_argument, tool_main

    @tool_main
    def main(argv=None):
        parser = argparse.ArgumentParser()
        add_debug_argument(parser)
        ...

Contract of a :func:`tool_main`-wrapped ``main(argv)``:

- returns what ``main`` returns when it succeeds;
- a *user-facing* error (an instance of a class listed in :data:`USER_ERRORS`: bad
  config, checkpoint, dataset, image, source, output, weights, backbone name, a library
  :class:`~detect.errors.UserInputError`, a missing file) prints exactly one line
  ``error: <message>`` on stderr (newlines collapsed into ``"; "``) and raises
  :class:`ToolExit` (a ``SystemExit`` with code 2 whose ``str`` is that line), or returns
  2 with ``return_code=True`` (tools whose ``main`` returns an exit code);
- ``KeyboardInterrupt`` prints ``error: interrupted`` (or its own message, e.g. the
  trainer's "stopped at iteration N; resume with ...") and exits with 130;
- any other exception (a bug) propagates with its traceback;
- with ``--debug`` in ``argv`` or ``DETECT_DEBUG=1`` in the environment nothing is
  caught: the original exception and its traceback come through.

:data:`USER_ERRORS` names classes as ``"module:Class"`` strings, resolved only against
modules that are already imported (an exception of a module that was never imported
cannot have been raised), so using this module imports nothing heavy.
"""
from __future__ import annotations

import functools
import os
import re
import sys
from typing import Callable, Sequence

#: The exception classes a tool reports as one line (extend here; "module:Class").
USER_ERRORS: tuple[str, ...] = (
    "detect.config:ConfigError",
    "detect.engine.checkpoint:CheckpointError",
    "detect.engine.trainer:NonFiniteLossError",
    "detect.data.checks:DatasetError",
    "detect.data.image_io:ImageReadError",
    "detect.inference.sources:SourceError",
    "detect.inference.sources:OutputError",
    "detect.errors:UserInputError",  # validate_targets, detector weights, metric names, source specs
    "backbones.weights:WeightsError",
    "backbones.registry:UnknownBackboneError",
    "builtins:FileNotFoundError",  # user-given paths that do not exist
)

INTERRUPTED_EXIT_CODE = 130
ERROR_EXIT_CODE = 2
DEBUG_ENV = "DETECT_DEBUG"


class ToolExit(SystemExit):
    """Ends a tool after its one-line error was printed; ``str()`` is that line."""

    def __init__(self, message: str, code: int = ERROR_EXIT_CODE):
        super().__init__(code)
        self.message = message

    def __str__(self) -> str:
        return self.message


def user_error_types() -> tuple[type, ...]:
    """The classes of :data:`USER_ERRORS` whose modules are imported now."""
    types = []
    for name in USER_ERRORS:
        module_name, class_name = name.split(":")
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if isinstance(cls, type) and issubclass(cls, BaseException):
            types.append(cls)
    return tuple(types)


def is_user_error(exc: BaseException) -> bool:
    """A user-facing error, also when torch's DataLoader carried it over from a worker (as its
    own class, or as a ``RuntimeError`` where that class cannot be rebuilt from a message)."""
    if isinstance(exc, user_error_types()):
        return True
    header = _WORKER_HEADER.match(str(exc))
    return header is not None and header.group("name") in {name.split(":")[1] for name in USER_ERRORS}


#: How torch's DataLoader re-raises a worker's exception in the main process: the same class,
#: its message replaced by "Caught X in DataLoader worker process N." and the worker's traceback.
_WORKER_HEADER = re.compile(r"^Caught (?P<name>\w+) in DataLoader worker process \d+\.\n"
                            r"Original Traceback \(most recent call last\):\n")


def worker_message(text: str) -> str:
    """The original message of an exception that torch's DataLoader carried over from a worker
    process (the text after the traceback's last ``[module.]Class: `` line), so a bad image met
    in a worker reads as it does in the main process; any other text unchanged."""
    header = _WORKER_HEADER.match(text)
    if header is None:
        return text
    last = None
    for last in re.finditer(r"\n(?:[\w.]+\.)?%s: " % re.escape(header.group("name")), text):
        pass
    return text[last.end():] if last is not None else text


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one line: lines stripped and joined with ``"; "``; a KeyError's
    quotes dropped; the class name when the message is empty; a DataLoader worker's exception
    reduced to its original message (:func:`worker_message`)."""
    text = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)
    text = worker_message(text)
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"  # an OSError raised by open() and friends
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


def debug_requested(argv: Sequence[str] | None) -> bool:
    """``--debug`` among the arguments (``sys.argv[1:]`` when None) or ``DETECT_DEBUG`` set to 1/true/yes."""
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if "--" in args:
        args = args[: args.index("--")]
    if "--debug" in args:
        return True
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def add_debug_argument(parser) -> None:
    """Add ``--debug`` (show the full traceback of an error) to an argparse parser."""
    parser.add_argument("--debug", action="store_true",
                        help=f"show the full traceback of an error (also: {DEBUG_ENV}=1)")


def fraction(text: str) -> float:
    """argparse ``type=`` for a value in 0..1 (a score threshold): the usage error names the range."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value:g} is outside 0..1 (scores are probabilities)")
    return value


def report(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def run_tool(main: Callable, argv: Sequence[str] | None = None, *, return_code: bool = False):
    """Call ``main(argv)`` under the module docstring's error contract."""
    debug = debug_requested(argv)
    try:
        return main(argv)
    except KeyboardInterrupt as exc:
        if debug:
            raise
        message = one_line(exc) if str(exc) else "interrupted"  # TrainingInterrupted says where to resume
        report(message)
        raise ToolExit(f"error: {message}", INTERRUPTED_EXIT_CODE) from None
    except SystemExit:
        raise
    except BaseException as exc:
        if debug or not is_user_error(exc):
            raise
        message = one_line(exc)
        report(message)
        if return_code:
            return ERROR_EXIT_CODE
        raise ToolExit(f"error: {message}") from None


def tool_main(func: Callable | None = None, *, return_code: bool = False):
    """Decorator form of :func:`run_tool`: ``@tool_main`` or ``@tool_main(return_code=True)``."""
    def wrap(main):
        @functools.wraps(main)
        def wrapper(argv=None):
            return run_tool(main, argv, return_code=return_code)
        return wrapper
    return wrap(func) if func is not None else wrap
