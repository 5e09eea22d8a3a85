"""Shared pieces of the reliability tests: tiny real checkpoints, a malicious pickle, and running `vfm` in
subprocesses (one command per process, or many commands through the CLI's ``main`` in one process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from tests.conftest import REPO_ROOT
from tests.synthetic import save_tiny_radio_checkpoint

import vfmkit
from vfmkit.weights.safe_load import load_pickle_checkpoint

TINY_RADIO = "test-radio-v2-tiny"


def save_torchhub_checkpoint(path: Path, extra: dict | None = None, **save_options) -> Path:
    """The tiny RADIO test model as a torch.hub ``.pth.tar`` (:func:`tests.synthetic.save_tiny_radio_checkpoint`),
    with ``extra`` entries added to its payload and saved with ``torch.save(**save_options)``."""
    save_tiny_radio_checkpoint(path)
    if extra or save_options:
        torch.save({**load_pickle_checkpoint(path), **(extra or {})}, path, **save_options)
    return path


def save_hf_folder(folder: Path) -> Path:
    """The same model as a Hugging Face-layout RADIO folder (``config.json`` + ``model.safetensors``)."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = load_pickle_checkpoint(save_tiny_radio_checkpoint(folder / "source.pth.tar"))
    (folder / "source.pth.tar").unlink()
    (folder / "config.json").write_text(json.dumps({"args": vars(payload["args"])}))
    weights = {"radio_model." + key.removeprefix("base_"): value for key, value in payload["state_dict"].items()}
    save_file(weights, str(folder / "model.safetensors"))
    return folder


def lightning_payload(extra: dict | None = None) -> dict:
    """What a Lightning ``.ckpt`` of a vfm task holds (epoch, weights, hyper-parameters with spec and classes)."""
    torch.manual_seed(0)
    return {
        "epoch": 2,
        "global_step": 12,
        "pytorch-lightning_version": "2.5.0",
        "state_dict": {"model.head.weight": torch.randn(3, 8), "model.head.bias": torch.zeros(3)},
        "hyper_parameters": {"spec": {"model": {"backbone": TINY_RADIO}}, "classes": ["a", "b", "c"]},
        **(extra or {}),
    }


@dataclass
class SideEffect:
    """A ``__reduce__`` payload that, if ever unpickled, calls ``function(str(marker))`` (``os.mkdir``, or
    ``os.system`` with a ``touch`` command): the marker's existence proves code ran."""

    function: object
    marker: Path
    command: str | None = None

    def __reduce__(self):
        return (self.function, (self.command or str(self.marker),))

    @property
    def global_name(self) -> str:
        """How the pickle names the function, e.g. ``posix.system``."""
        return f"{self.function.__module__}.{self.function.__name__}"


def mkdir_side_effect(tmp_path: Path) -> SideEffect:
    return SideEffect(os.mkdir, tmp_path / "MKDIR_RAN")


def system_side_effect(tmp_path: Path) -> SideEffect:
    marker = tmp_path / "SYSTEM_RAN"
    return SideEffect(os.system, marker, command=f"touch '{marker}'")


# --- the CLI in subprocesses ---------------------------------------------------------------------------------------


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for `vfm` subprocesses: the vfmkit this test imported, offline, the test's private HF cache
    (conftest sets both)."""
    env = dict(os.environ)
    source_root = str(Path(vfmkit.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source_root, str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def run_vfm(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """``vfm args...`` as its own process (``python -m vfmkit.cli.main``)."""
    command = [sys.executable, "-m", "vfmkit.cli.main", *map(str, args)]
    return subprocess.run(command, env=env or cli_env(), capture_output=True, text=True, timeout=timeout, check=False)


_DRIVER = """
import json, os, sys, traceback
from vfmkit.cli.main import main

cases, folder = json.load(open(sys.argv[1])), sys.argv[2]
codes = []
for index, argv in enumerate(cases):
    saved = os.dup(1), os.dup(2)
    with open(f"{folder}/{index}.out", "w") as out, open(f"{folder}/{index}.err", "w") as err:
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(out.fileno(), 1), os.dup2(err.fileno(), 2)
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # what the interpreter would print for an uncaught error, with exit code 1
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
    codes.append(code)
json.dump(codes, open(f"{folder}/codes.json", "w"))
"""


@dataclass
class CliResult:
    """Exit code and output of one `vfm` command."""

    argv: list[str]
    code: int
    out: str
    err: str


def run_vfm_batch(
    cases: list[list[str]], folder: Path, env: dict[str, str] | None = None, cwd: Path | None = None, timeout=300
) -> list[CliResult]:
    """Run several `vfm` commands through the CLI's ``main`` in ONE subprocess (imports are paid once), in ``cwd``
    (default: this process's); each command's stdout/stderr are captured at the file-descriptor level, so stray
    prints and warnings show up."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    cases = [[str(a) for a in argv] for argv in cases]
    (folder / "cases.json").write_text(json.dumps(cases))
    command = [sys.executable, "-c", _DRIVER, str(folder / "cases.json"), str(folder)]
    env = env or cli_env()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    codes = json.loads((folder / "codes.json").read_text())
    return [
        CliResult(argv, code, (folder / f"{i}.out").read_text(), (folder / f"{i}.err").read_text())
        for i, (argv, code) in enumerate(zip(cases, codes, strict=True))
    ]


def assert_one_line_error(code: int, err: str, *fragments: str) -> str:
    """Exit code 2 and exactly one stderr line ``error: ...`` holding every fragment; returns the line."""
    lines = err.strip().splitlines()
    assert code == 2, f"exit code {code}, stderr:\n{err}"
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
