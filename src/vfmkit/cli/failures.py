"""The one error path of the ``vfm`` command: how every way a command can end becomes an exit code and one line.

- A user error (:class:`vfmkit.errors.VfmError`): ``error: <message>`` on stderr, its ``exit_code`` (2). A training
  stopped by a signal (``Interrupted``, also a VfmError) prints its line without the ``error:`` prefix (130 / 143).
- A usage error (typer): ``error: <message> (see `vfm ... --help`)``, exit 2.
- An output the disk refuses (``OSError`` with an errno of :data:`OUTPUT_ERRNOS`): ``error: cannot write <path>:
  <reason> (<hint>)``, exit 2. The shared writers (:mod:`vfmkit.utils.atomic`) make sure the path is there.
- Ctrl-C (``KeyboardInterrupt``, or typer's ``Abort`` raised from one) at any stage: ``interrupted``, exit 130.
  ``EOFError`` is never an interrupt: typer / click turn it into an ``Abort`` too, told apart by the ``Abort``'s
  ``__context__``; it is an unexpected failure.
- Anything else: ``error: vfm <command> failed unexpectedly: <ExcType>: <message> (traceback in <path>)``, exit 1.
  The full traceback goes to ``traceback.txt`` in the run folder the command created
  (:func:`vfmkit.utils.folders.current_output_folder`), else in the vfmkit cache folder
  (:func:`vfmkit.utils.folders.cache_home`); when neither can be written, the traceback follows the line on stderr.
"""

from __future__ import annotations

import errno
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

import typer
from typer.exceptions import Abort, Exit, TyperException

from vfmkit._version import __version__
from vfmkit.errors import VfmError
from vfmkit.utils.atomic import atomic_write_text
from vfmkit.utils.folders import cache_home, current_output_folder, forget_output_folder

EXIT_UNEXPECTED = 1
EXIT_INTERRUPTED = 130
TRACEBACK_FILE = "traceback.txt"

OUTPUT_ERRNOS = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EISDIR,
    errno.ENOTDIR,
    errno.EEXIST,
    errno.ENAMETOOLONG,
}
"""Errors of writing outputs a user can fix (permissions, a full or read-only disk, a folder where a file goes)."""


def user_message(exc: BaseException) -> str:
    """The one-line message of a user error; errors re-raised from DataLoader workers carry the worker's traceback
    in their text, of which only the original error's own line is kept."""
    text = str(exc)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if last.startswith(f"{type(exc).__module__}.") else last
    return text


def output_error_message(exc: OSError) -> str:
    """One line naming the path and the reason, e.g. ``cannot write runs/x/metrics.json: No space left on device``."""
    target = exc.filename2 or exc.filename
    reason = exc.strerror or type(exc).__name__
    hint = {
        errno.ENOSPC: " (free some space or write elsewhere)",
        errno.EDQUOT: " (disk quota exceeded)",
        errno.EROFS: " (choose a writable folder)",
        errno.EACCES: " (choose a folder you can write to)",
        errno.EISDIR: " (give a file path, not a folder)",
    }.get(exc.errno, "")
    return f"cannot write {target}: {reason}{hint}" if target else f"{reason}{hint}"


def command_name(root: Any, args: Sequence[str]) -> str:
    """``vfm`` and the sub-command names at the start of ``args``, e.g. ``vfm classify train``."""
    names, command = ["vfm"], root
    for token in args:
        sub = getattr(command, "commands", {}).get(token)
        if sub is None:
            break
        names.append(token)
        command = sub
    return " ".join(names)


def run_command(root: Callable[[], Any], args: Sequence[str]) -> NoReturn:
    """Build the command tree (``root()``), run the command ``args`` name, and exit as the module docstring says."""
    forget_output_folder()
    command = None
    try:
        command = root()
        with command.make_context("vfm", list(args)) as ctx:
            result = command.invoke(ctx)
    except VfmError as exc:
        interrupted = type(exc).__name__ == "Interrupted"  # a signal, not an error: no "error:" prefix
        fail(user_message(exc), exc.exit_code, "" if interrupted else "error: ")
    except Exit as exc:  # --help, ctx.exit(code)
        sys.exit(exc.exit_code)
    except TyperException as exc:  # usage errors
        usage_error(exc)
    except Abort as exc:
        if exc.__context__ is not None and not isinstance(exc.__context__, KeyboardInterrupt):
            unexpected(exc.__context__, command_name(command, args), args)  # EOFError: not an interrupt
        fail("interrupted", EXIT_INTERRUPTED, "")
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED, "")
    except OSError as exc:
        if exc.errno == errno.EPIPE:  # `vfm models | head`: the reader left; nothing to say
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no flush error at exit
            sys.exit(1)
        if exc.errno not in OUTPUT_ERRNOS:
            unexpected(exc, command_name(command, args), args)
        fail(output_error_message(exc), 2)
    except Exception as exc:
        unexpected(exc, command_name(command, args), args)
    sys.exit(result if isinstance(result, int) else 0)


def fail(message: str, code: int = 2, prefix: str = "error: ") -> NoReturn:
    """Print ``<prefix><message>`` on one line of stderr and exit with ``code``."""
    typer.echo(f"{prefix}{' '.join(message.split())}", err=True)
    sys.exit(code)


def usage_error(exc: TyperException) -> NoReturn:
    """A usage error as one line with where to find help (``--help`` alone for a bare group)."""
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
        typer.echo(ctx.get_help())
        sys.exit(0)
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    fail(message + hint, 2)


def unexpected(exc: BaseException, command: str, args: Sequence[str]) -> NoReturn:
    """One line naming the command and the error, the traceback in a file (see the module docstring); exit 1."""
    text = traceback_text(exc, command, args)
    where = save_traceback(text)
    summary = (str(exc).strip().splitlines() or [""])[0][:300]
    what = f"{type(exc).__name__}: {summary}" if summary else type(exc).__name__
    if where is not None:
        fail(f"{command} failed unexpectedly: {what} (traceback in {where})", EXIT_UNEXPECTED)
    typer.echo(f"error: {command} failed unexpectedly: {what} (the traceback could not be saved; it follows)", err=True)
    typer.echo(text, err=True, nl=False)
    sys.exit(EXIT_UNEXPECTED)


def traceback_text(exc: BaseException, command: str, args: Sequence[str]) -> str:
    """The command line, vfmkit version, time and the full (chained) traceback."""
    head = [
        f"command: {shlex.join([command.split()[0], *args])}",
        f"vfmkit: {__version__}",
        f"time: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        "",
    ]
    return "\n".join(head) + "".join(traceback.format_exception(exc))


def save_traceback(text: str) -> Path | None:
    """Write ``traceback.txt`` into the published run folder, else the vfmkit cache folder; the path, or None when
    neither can be written."""
    folders = [current_output_folder(), cache_home()]
    for folder in [f for f in folders if f is not None]:
        path = Path(folder) / TRACEBACK_FILE
        try:
            atomic_write_text(path, text)
        except OSError:
            continue
        return path
    return None
