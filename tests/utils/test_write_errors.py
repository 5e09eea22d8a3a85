"""Disk errors of the shared writers name the file: :func:`vfmkit.utils.atomic.naming_the_target` turns what PIL,
matplotlib, onnx (a bare ``OSError``) and safetensors (``SafetensorError`` text) raise into ``OSError(errno,
strerror, <target>)``; everything else passes unchanged."""

from __future__ import annotations

import errno
import os

import pytest
from safetensors import SafetensorError

from vfmkit.utils.atomic import atomic_output, atomic_write_text, naming_the_target


def _raised(path, exc: BaseException) -> BaseException:
    with pytest.raises(BaseException) as info, naming_the_target(path):
        raise exc
    return info.value


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device"),  # PIL, matplotlib, onnx, file.write
        SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
        RuntimeError('IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'),
    ],
    ids=["bare-oserror", "safetensors", "rust-debug-text"],
)
def test_errors_without_the_path_get_the_target(tmp_path, exc) -> None:
    target = tmp_path / "out.png"
    raised = _raised(target, exc)
    assert type(raised) is OSError and raised.errno == errno.ENOSPC and raised.filename == str(target)
    assert raised.strerror == "No space left on device" and raised.__cause__ is exc


def test_an_error_naming_a_temporary_file_names_the_target_and_keeps_its_subclass(tmp_path) -> None:
    target = tmp_path / "model.onnx"
    staged = tmp_path / ".model.onnx.k3j2" / "raw.onnx"  # a file in the staging folder of the export
    raised = _raised(target, PermissionError(errno.EACCES, "Permission denied", str(staged)))
    assert isinstance(raised, PermissionError) and raised.filename == str(target)


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.EXDEV, "Invalid cross-device link", "/a/.x.tmp", None, "/a/x"),  # os.replace: names x
        OSError(errno.ENOENT, "No such file or directory", "/elsewhere/input.png"),  # another file
        ValueError("cannot write mode RGBA as JPEG"),
        OSError("cannot write mode RGBA as JPEG"),  # PIL's format errors have no errno
        SafetensorError("Error while deserializing header: file not found (os error 2)"),  # not a disk error
        KeyboardInterrupt(),
    ],
)
def test_other_errors_pass_unchanged(tmp_path, exc) -> None:
    assert _raised(tmp_path / "x", exc) is exc


def test_atomic_output_names_the_target_when_the_writer_loses_it(tmp_path) -> None:
    target = tmp_path / "picture.png"
    with pytest.raises(OSError) as info, atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert info.value.filename == str(target) and not list(tmp_path.iterdir())


def test_a_read_only_folder_names_the_target_not_the_temporary_file(tmp_path, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".metrics.json.a1b2.tmp"))

    monkeypatch.setattr("tempfile.mkstemp", refuse)
    with pytest.raises(PermissionError) as info:
        atomic_write_text(tmp_path / "metrics.json", "{}")
    assert info.value.filename == str(tmp_path / "metrics.json")
