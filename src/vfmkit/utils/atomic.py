"""Atomic file output: a temporary file in the target's folder, renamed onto the target with ``os.replace`` only
once it is complete, so readers never see a half-written file and a failure (or a kill) never replaces the previous
version.

Finished files get the mode a plain ``open(path, "w")`` would give them (``0o666`` minus the process umask), whatever
the writer did: ``tempfile.mkstemp`` and ``safetensors.save_file`` create files with mode ``0o600``.

Temporary files are named ``.<target name>.<random>.tmp`` beside the target; a process killed mid-write leaves one
behind, which :func:`stale_temp_files` finds.

A write that fails for a reason of the disk (full, read-only, no permission ...) always names the target: writers
that lose the file name (``PIL.Image.save``, ``matplotlib`` and ``onnx.save`` raise a bare ``OSError(ENOSPC)``,
``safetensors.save_file`` a ``SafetensorError`` whose text holds the OS error) are turned into an ``OSError`` with
the errno and ``filename`` = the target path (:func:`naming_the_target`).
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process umask (e.g. ``0o022``), read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (the only portable way to read it)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode a newly created regular file gets: ``0o666`` minus the umask (``0o644`` with umask ``0o022``)."""
    return 0o666 & ~current_umask()


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; on success it replaces ``path`` atomically.

    The folder of ``path`` is created. Whatever the block writes to the temporary path (``torch.save``,
    ``safetensors.save_file``, ``PIL.Image.save`` with an explicit format, plain ``open``), the finished file gets
    :func:`default_file_mode` and is renamed onto ``path``. When the block raises (or is interrupted), the temporary
    file is removed, ``path`` is left as it was and the exception propagates.

    Example::

        with atomic_output(run_dir / "last.ckpt") as tmp:
            torch.save(state, tmp)

    Raises:
        OSError: the folder cannot be created or written, or the rename fails (e.g. ``path`` is a folder).
    """
    path = Path(path)
    with naming_the_target(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
        os.close(fd)
        tmp = Path(name)
        try:
            yield tmp
            os.chmod(tmp, default_file_mode())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG})
"""Errors of the disk a write goes to (full, quota, read-only, permissions, I/O, file too large)."""

_OS_ERROR_IN_TEXT = re.compile(r"\(os error (\d+)\)|Os \{ code: (\d+)")
"""How Rust libraries (safetensors, tokenizers) spell an OS error in their exception text."""


@contextmanager
def naming_the_target(path: str | Path) -> Iterator[None]:
    """Make every OS-level write error raised in the block name ``path``.

    An ``OSError`` without a file name, or naming only a temporary file of the write (a ``.<name>.*`` sibling of
    ``path`` or a file in such a folder), and a library error whose text carries a disk error (``... (os error
    28)``, :data:`DISK_ERRNOS`) are re-raised as ``OSError(errno, strerror, path)`` (the errno's subclass, e.g.
    ``PermissionError``), chained to the original. Errors that already name another file (e.g. ``os.replace``'s
    ``filename2``) pass unchanged, and so does everything else.

    Example::

        with naming_the_target(out):
            onnx.save_model(model, str(out))  # a full disk: OSError(28, "No space left on device", str(out))
    """
    path = Path(path)
    try:
        yield
    except Exception as exc:
        code = _lost_errno(exc, path)
        if code is None:
            raise
        strerror = (exc.strerror if isinstance(exc, OSError) else None) or os.strerror(code)
        raise OSError(code, strerror, str(path)) from exc


def _is_temporary(name: Path, path: Path) -> bool:
    """A temporary file (or a file in a temporary folder) of writing ``path``: ``.<name>.*`` in its folder."""
    prefix = f".{path.name}."
    return any(part.startswith(prefix) for part in name.parts)


def _lost_errno(exc: Exception, path: Path) -> int | None:
    """The errno of a write error that does not name ``path`` (None: leave the exception as it is)."""
    if isinstance(exc, OSError):
        if not exc.errno:
            return None
        named = {str(name) for name in (exc.filename, exc.filename2) if name is not None}
        temporary = {name for name in named if _is_temporary(Path(name), path)}
        return exc.errno if named <= temporary else None
    match = _OS_ERROR_IN_TEXT.search(str(exc))
    if match is None:
        return None
    code = int(match.group(1) or match.group(2))
    return code if code in DISK_ERRNOS else None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding=encoding)


def stale_temp_files(folder: str | Path, name: str | None = None) -> list[Path]:
    """Temporary files :func:`atomic_output` left in ``folder`` (a killed writer), optionally only those of the
    target ``name``; sorted. Remove them only when no other process can be writing to the folder."""
    pattern = f".{name}.*{TEMP_SUFFIX}" if name else f".*{TEMP_SUFFIX}"
    return sorted(p for p in Path(folder).glob(pattern) if p.is_file())


def save_image_atomically(image, path: str | Path) -> Path:
    """Save a PIL image to ``path`` atomically, in the format its suffix names (``.png``, ``.jpg`` ...)."""
    path = Path(path)
    with atomic_output(path) as tmp:
        image.save(tmp, format=_format_of(path))
    return path


def save_figure_atomically(fig, path: str | Path, dpi: int = 100) -> Path:
    """Save a matplotlib figure to ``path`` atomically, in the format its suffix names (default PNG)."""
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".").lower() or "png")
    return path


def _format_of(path: Path) -> str:
    """PIL's format name for a file suffix (``.jpg`` -> ``JPEG``); PNG when there is none."""
    from PIL import Image

    Image.init()
    return Image.EXTENSION.get(path.suffix.lower(), "PNG")
