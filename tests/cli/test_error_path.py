"""The one error path of `vfm` (:mod:`vfmkit.cli.failures`): every way a command ends gives one stderr line and its
exit code. A tiny typer app drives :func:`run_command` with each kind of ending; the real `vfm` gets an injected
EOFError, Ctrl-C and an unexpected exception inside ``vfm classify train`` (traceback.txt in the run folder)."""

from __future__ import annotations

import errno
import importlib
from pathlib import Path

import pytest
import typer
from tests.synthetic import make_shapes_dataset

from vfmkit.cli.failures import run_command
from vfmkit.cli.main import main
from vfmkit.engine.runs import Interrupted
from vfmkit.errors import VfmError
from vfmkit.utils.folders import cache_home, publish_output_folder

RUN_FOLDER: list[Path] = []


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.command()
    def ok() -> None:
        typer.echo("fine")

    @app.command()
    def user() -> None:
        raise VfmError("data/x.png: not an image\n(expected PNG)")

    @app.command()
    def boom() -> None:
        raise ZeroDivisionError("division by zero")

    @app.command("boom-in-run")
    def boom_in_run() -> None:
        with publish_output_folder(RUN_FOLDER[0]):
            raise RuntimeError("stack expects each tensor to be equal size")

    @app.command()
    def eof() -> None:
        raise EOFError("Ran out of input")

    @app.command("abort-eof")
    def abort_eof() -> None:
        try:
            raise EOFError("Ran out of input")
        except EOFError:
            raise typer.Abort() from None  # click / typer: the EOFError stays the Abort's __context__

    @app.command("abort-ctrl-c")
    def abort_ctrl_c() -> None:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise typer.Abort() from None

    @app.command("ctrl-c")
    def ctrl_c() -> None:
        raise KeyboardInterrupt

    @app.command()
    def full(path: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", path)

    @app.command()
    def stopped() -> None:
        raise Interrupted("stopped by SIGTERM", 143, Path("runs/x"), Path("runs/x/checkpoints/last.ckpt"))

    return app


def _run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        run_command(lambda: typer.main.get_command(_app()), list(args))
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_success_and_user_errors(capsys) -> None:
    assert _run(capsys, "ok")[:2] == (0, "fine\n")
    code, _, err = _run(capsys, "user")
    assert code == 2 and _one_line(err) == "error: data/x.png: not an image (expected PNG)"
    code, _, err = _run(capsys, "nope")
    assert code == 2 and _one_line(err).startswith("error: No such command 'nope'")
    code, _, err = _run(capsys, "full", "/mnt/full/out.png")
    assert code == 2
    assert (
        _one_line(err)
        == "error: cannot write /mnt/full/out.png: No space left on device (free some space or write elsewhere)"
    )
    code, _, err = _run(capsys, "stopped")
    assert code == 143 and _one_line(err).startswith("stopped by SIGTERM; no epoch finished")


@pytest.mark.parametrize("command", ["ctrl-c", "abort-ctrl-c"])
def test_ctrl_c_is_interrupted_130(capsys, command) -> None:
    code, _, err = _run(capsys, command)
    assert code == 130 and _one_line(err) == "interrupted"


def test_an_unexpected_error_names_the_command_and_saves_the_traceback(capsys) -> None:
    code, _, err = _run(capsys, "boom")
    where = cache_home() / "traceback.txt"  # no run folder: the vfmkit cache folder ($VFMKIT_CACHE in the tests)
    assert code == 1
    assert _one_line(err) == (
        f"error: vfm boom failed unexpectedly: ZeroDivisionError: division by zero (traceback in {where})"
    )
    text = where.read_text()
    assert text.startswith("command: vfm boom\n") and "Traceback (most recent call last)" in text
    assert 'raise ZeroDivisionError("division by zero")' in text


def test_an_unexpected_error_in_a_run_leaves_the_traceback_in_the_run_folder(capsys, tmp_path) -> None:
    RUN_FOLDER[:] = [tmp_path / "runs" / "classify" / "exp"]
    RUN_FOLDER[0].mkdir(parents=True)
    code, _, err = _run(capsys, "boom-in-run")
    assert code == 1 and f"(traceback in {RUN_FOLDER[0] / 'traceback.txt'})" in _one_line(err)
    assert "RuntimeError: stack expects each tensor" in (RUN_FOLDER[0] / "traceback.txt").read_text()
    code, _, err = _run(capsys, "boom")  # the next command starts without a published folder
    assert f"(traceback in {cache_home() / 'traceback.txt'})" in _one_line(err)


@pytest.mark.parametrize("command", ["eof", "abort-eof"])
def test_eof_is_never_an_interrupt(capsys, command) -> None:
    """N9: click / typer turn EOFError into Abort, which used to print "interrupted" with exit code 130."""
    code, _, err = _run(capsys, command)
    line = _one_line(err)
    assert code == 1 and "interrupted" not in line
    assert line.startswith(f"error: vfm {command} failed unexpectedly: EOFError: Ran out of input (traceback in ")


def test_when_no_traceback_can_be_saved_it_follows_the_line(capsys, monkeypatch) -> None:
    def refuse(path, text):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr("vfmkit.cli.failures.atomic_write_text", refuse)
    code, _, err = _run(capsys, "boom")
    first, *rest = err.strip().splitlines()
    assert code == 1 and first.endswith("(the traceback could not be saved; it follows)")
    assert rest[-1] == "ZeroDivisionError: division by zero"


# --- the real `vfm` ----------------------------------------------------------------------------------------------


def _vfm(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return info.value.code, capsys.readouterr().err


def test_vfm_eof_error_from_a_loader_is_not_an_interrupt(capsys, monkeypatch, tmp_path) -> None:
    """N9 through `vfm embed`: an EOFError (e.g. torch.load of an empty file) is an unexpected failure, rc 1."""

    def empty_checkpoint(*args, **kwargs):
        raise EOFError("Ran out of input")

    monkeypatch.setattr("vfmkit.features.embed.embed_source", empty_checkpoint)
    code, err = _vfm(capsys, "embed", tmp_path, "--model", "test-radio-v2-tiny", "-o", tmp_path / "e.safetensors")
    assert code == 1
    assert _one_line(err).startswith("error: vfm embed failed unexpectedly: EOFError: Ran out of input (traceback in ")


def test_vfm_ctrl_c_in_a_command_is_interrupted(capsys, monkeypatch, tmp_path) -> None:
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("vfmkit.features.pca.pca_source", ctrl_c)
    code, err = _vfm(capsys, "pca", tmp_path, "--model", "test-radio-v2-tiny", "-o", tmp_path / "pca")
    assert code == 130 and _one_line(err) == "interrupted"


def test_vfm_train_unexpected_error_writes_traceback_txt_in_the_run_folder(capsys, monkeypatch, tmp_path) -> None:
    data = make_shapes_dataset(tmp_path / "data", {"train": 1, "val": 1}, size=32)

    def crash(*args, **kwargs):
        raise ZeroDivisionError("float division by zero")

    train_module = importlib.import_module("vfmkit.engine.train")  # `vfmkit.engine.train` is also the function
    monkeypatch.setattr(train_module, "_fit_and_evaluate", crash)
    code, err = _vfm(
        capsys,
        "classify",
        "train",
        f"dataset.root={data}",
        f"results_dir={tmp_path / 'runs'}",
        "model.backbone=test-radio-v2-tiny",
        "model.resolution=32",
    )
    run = tmp_path / "runs" / "classify" / "exp"
    assert code == 1
    assert _one_line(err) == (
        "error: vfm classify train failed unexpectedly: ZeroDivisionError: float division by zero "
        f"(traceback in {run / 'traceback.txt'})"
    )
    text = (run / "traceback.txt").read_text()
    assert text.startswith("command: vfm classify train dataset.root=") and "ZeroDivisionError" in text
