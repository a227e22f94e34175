"""What every command line of the package shares (no torch, no ROS): one log format and one exit-code convention.

Exit codes: 0 done; 1 the work failed at run time (an output cannot be written, a device or an optional runtime is
missing, a child process failed); 2 bad usage or bad input (argparse's own errors, invalid option values, an input
file or folder that is missing or unusable). :func:`run_command` turns the errors a command expects into one line
and its code; any other exception keeps its traceback, because it is a bug. An options dataclass whose fields are
made with :func:`option` gives its command's parser (:func:`add_dataclass_arguments`): defaults and help once.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO, TypeVar

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2  # what argparse exits with on bad usage, too

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"

# Whatever the command: a value that cannot work, or a file that is not there, is the user's input.
BAD_INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)
# Whatever the command: failing to write, a device or runtime error, an optional package that is not installed.
FAILURE_ERRORS: tuple[type[BaseException], ...] = (OSError, RuntimeError, ImportError)


class _ConsoleHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` or ``sys.stdout`` as it is at each record, so redirected or captured streams are
    followed (a plain StreamHandler keeps the stream it was created with)."""

    def __init__(self, stream_name: str) -> None:
        self._stream_name = stream_name
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return getattr(sys, self._stream_name)

    @stream.setter
    def stream(self, _value: TextIO) -> None:  # StreamHandler.__init__ assigns one; the property decides
        pass


def configure_logging(level: int | str = logging.INFO, stream: str = "stderr",
                      package_level: int | str | None = None) -> None:
    """The entry points' logging: :data:`LOG_FORMAT` at ``level`` on ``stream`` ("stderr" or "stdout"); this
    package's own loggers at ``package_level`` when given (a command whose libraries are chatty keeps them at
    ``level`` and shows its own messages), else at ``level`` too.

    Called again (several commands run in one process, as in the tests) it replaces its handler and the package
    level instead of adding to them.
    """
    if stream not in ("stderr", "stdout"):
        raise ValueError(f"stream must be 'stderr' or 'stdout', got {stream!r}")
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _ConsoleHandler)]:
        root.removeHandler(handler)
    handler = _ConsoleHandler(stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("hybridnets_ros").setLevel(logging.NOTSET if package_level is None else package_level)


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (our messages name the file, the problem and the remedy)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


def run_command(prog: str, work: Callable[[], int | None], bad_input: tuple[type[BaseException], ...] = ()) -> int:
    """``work()``'s exit code (None counts as 0); an error it raises that is bad input (:data:`BAD_INPUT_ERRORS`
    and the command's own ``bad_input``, checked first) or a failure (:data:`FAILURE_ERRORS`) is logged as one line
    under the logger ``prog`` and answered with :data:`EXIT_BAD_INPUT` or :data:`EXIT_FAILURE`."""
    log = logging.getLogger(prog)
    try:
        code = work()
    except BAD_INPUT_ERRORS + bad_input as exc:
        log.error("%s", _one_line(exc))
        return EXIT_BAD_INPUT
    except FAILURE_ERRORS as exc:
        log.error("%s", _one_line(exc))
        return EXIT_FAILURE
    return EXIT_OK if code is None else code


def option(default: Any = dataclasses.MISSING, help_text: str | None = None, **argparse_options: Any) -> Any:
    """A dataclass field that is also a command-line option: its default and help are written here, once.

    ``argparse_options`` (``choices``, ``group``: the title of the argument group) go to the flag that
    :func:`add_dataclass_arguments` makes. No default: the option is required.
    """
    return dataclasses.field(default=default, metadata={"help": help_text, **argparse_options})


def add_dataclass_arguments(
    parser: argparse.ArgumentParser,
    options_type: type,
    skip: Sequence[str] = (),
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """One flag ``--field-name`` per field of the dataclass ``options_type`` (except ``skip``).

    The type comes from the annotation (``X | None`` is X, ``list[X]`` takes one or more values, or one per flag
    with ``action="append"``; ``bool`` is a switch that defaults to False), the default from the field, help,
    choices, group and other argparse settings from :func:`option`. ``overrides`` (field -> settings) lets a command
    word a field of a shared base its own way.
    """
    hints = typing.get_type_hints(options_type)
    groups: dict[str, Any] = {}
    # In the constructor's order: the command's own fields first, keyword-only ones (shared bases) after them.
    for spec in sorted(dataclasses.fields(options_type), key=lambda spec: spec.kw_only):
        if spec.name in skip:
            continue
        settings = {**spec.metadata, **(overrides or {}).get(spec.name, {})}
        title = settings.pop("group", None)
        target = parser if title is None else groups.setdefault(title, parser.add_argument_group(title))
        kwargs: dict[str, Any] = {"help": settings.pop("help", None), **settings}
        if spec.default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = spec.default
        kind = hints[spec.name]
        if kind is bool:
            kwargs["action"] = "store_true"
        else:
            if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
                kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
            if kwargs.get("action") == "append":  # each use of the flag adds one element
                kind = typing.get_args(kind)[0]
            if typing.get_origin(kind) is list:
                kwargs["nargs"] = "+"
                kind = typing.get_args(kind)[0]
            kwargs["type"] = kind
        target.add_argument("--" + spec.name.replace("_", "-"), **kwargs)


def dataclass_from_args(options_type: type[T], args: argparse.Namespace) -> T:
    """The ``options_type`` instance that parsed arguments describe (one attribute per field)."""
    return options_type(**{spec.name: getattr(args, spec.name) for spec in dataclasses.fields(options_type)})
