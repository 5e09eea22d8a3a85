"""Safe checkpoint reading: safetensors, or ``torch.load(weights_only=True)`` with only ``argparse.Namespace``
allowed beyond tensors and containers. Nothing in a checkpoint is ever executed.

Every checkpoint vfmkit reads goes through this module. Every failure is a :class:`~vfmkit.errors.WeightsError` with
one line naming the file and saying what was wrong: a missing or empty file, random bytes, a truncated or
bit-flipped archive, and a pickle that needs a class or function outside the allow-list. For the last kind the
message names the refused global(s), found by a static scan of the pickle opcodes (:func:`refused_globals`; nothing
is imported or run), so it does not depend on how torch words its refusal. torch's own advice ("retry with
``weights_only=False``") never reaches a message: vfmkit offers no unsafe load.
"""

from __future__ import annotations

import argparse
import pickle
import pickletools
import re
import warnings
import zipfile
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from vfmkit.errors import WeightsError
from vfmkit.utils.text import error_reason, one_line

SAFE_GLOBALS = [argparse.Namespace]
ACCEPTED = "vfmkit reads .safetensors files and torch.save checkpoints of tensors and plain containers"
"""What a damaged-file message says vfmkit accepts."""
_TORCH_ADVICE = ("weights_only", "Re-running `torch.load`", "arbitrary code execution")

_STRING_OPS = frozenset(
    {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
)
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_MAX_PICKLES_PER_FILE = 16  # legacy torch files hold a few pickles back to back, then raw storage bytes


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` file on the CPU.

    Raises:
        WeightsError: missing, empty or unreadable file.
    """
    return read_safetensors(path)[0]


def read_safetensors(
    path: str | Path, select: Callable[[str], bool] | None = None
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The tensors of a ``.safetensors`` file whose key ``select`` accepts (all when None; the others are never
    read), on the CPU, and every key of the file.

    Raises:
        WeightsError: missing, empty or unreadable file.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: not a readable safetensors file (the file is empty)")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            keys = list(handle.keys())
            return {k: handle.get_tensor(k) for k in keys if select is None or select(k)}, keys
    except Exception as err:  # SafetensorError, OSError, ValueError, ... on a damaged file (nothing is executed)
        raise WeightsError(f"{path}: not a readable safetensors file ({_damage_reason(err)})") from None


def load_weights_file(path: str | Path) -> Any:
    """A weights file by its suffix: ``.safetensors`` (a dict of tensors), anything else a torch pickle checkpoint
    (:func:`load_pickle_checkpoint`; what it holds is the caller's to check).

    Raises:
        WeightsError: missing, empty, unreadable or refused file.
    """
    return load_safetensors(path) if Path(path).suffix == ".safetensors" else load_pickle_checkpoint(path)


def load_pickle_checkpoint(path: str | Path) -> Any:
    """A torch pickle checkpoint loaded with ``weights_only=True`` (argparse.Namespace allowed).

    Raises:
        WeightsError: missing file, a corrupt archive, or a pickle that needs any other class or function (the
            message names it; vfmkit never falls back to an unsafe load).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: not a readable checkpoint (the file is empty)")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # e.g. "Detected pickle protocol 4": the error says enough
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # random or damaged bytes raise anything from EOFError to IndexError
        refused = refused_globals(path)
        if refused:
            raise WeightsError(refused_message(path, refused)) from None
        raise WeightsError(f"{path}: not a readable checkpoint ({_damage_reason(err)}); {ACCEPTED}") from None


def _damage_reason(err: BaseException) -> str:
    """What was wrong with a damaged file, in a few words, without torch's advice about unsafe loading."""
    text = str(err)
    if isinstance(err, EOFError):
        return "it ends before its data does: truncated?"
    if isinstance(err, pickle.UnpicklingError) and "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
        return f"not a torch checkpoint, unpickling stopped at: {one_line(detail, 120)}"
    if "PytorchStreamReader" in text:  # torch's zip reader: keep the first sentence, not the advice after it
        return "a damaged zip archive: " + one_line(re.split(r"\.\s", text, maxsplit=1)[0], 160)
    reason = error_reason(err, 200)
    return type(err).__name__ if any(marker in reason for marker in _TORCH_ADVICE) else reason


def refused_message(path: Path, refused: list[str]) -> str:
    """The one-line message for a pickle refused because it needs ``refused`` globals."""
    names = ", ".join(refused[:3]) + (f" and {len(refused) - 3} more" if len(refused) > 3 else "")
    verb = "is" if len(refused) == 1 else "are"
    return (
        f"{path}: refused to load: the pickle needs {names}, which {verb} not on the allow-list (tensors, containers "
        "and argparse.Namespace); nothing in the file was run. If you trust the file, convert it to safetensors on "
        "a trusted machine."
    )


def refused_globals(path: str | Path) -> list[str]:
    """Globals (``module.name``) a torch checkpoint's pickle refers to that ``torch.load(weights_only=True)`` does
    not allow here (torch's allow-list plus :data:`SAFE_GLOBALS`), sorted. A static scan of the pickle opcodes of
    ``data.pkl`` (zip checkpoints) or of the file itself (legacy and plain pickles): nothing is imported or run, the
    tensor data is not read, and an unreadable file gives an empty list."""
    found = set()
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for name in (n for n in archive.namelist() if n.endswith(".pkl")):
                    with archive.open(name) as stream:
                        found |= pickle_globals(stream)
        else:
            with path.open("rb") as stream:
                found |= pickle_globals(stream)
    except Exception:  # a damaged archive: name what was found before the damage
        pass
    return sorted(found - _allowed_globals())


def pickle_globals(stream: BinaryIO) -> set[str]:
    """``module.name`` of every GLOBAL / INST / STACK_GLOBAL in the pickles at the start of ``stream`` (several
    back to back, as legacy torch files hold), read with :func:`pickletools.genops` without executing anything;
    the scan stops at the first byte that is not a pickle."""
    found: set[str] = set()
    for _ in range(_MAX_PICKLES_PER_FILE):
        try:
            found |= _globals_of_one_pickle(stream)
        except Exception:  # not (or no longer) a pickle: the end, damage, or the raw storage bytes of a legacy file
            break
    return found


def _globals_of_one_pickle(stream: BinaryIO) -> set[str]:
    found: set[str] = set()
    memo: dict[int, Any] = {}
    pushed: list[Any] = []  # values the opcodes pushed, strings kept (enough to name STACK_GLOBAL's operands)
    for opcode, arg, _ in pickletools.genops(stream):
        name = opcode.name
        if name in ("GLOBAL", "INST"):
            module, _, attribute = str(arg).partition(" ")
            found.add(_python3_name(module, attribute))
        elif name == "STACK_GLOBAL" and len(pushed) >= 2 and all(isinstance(v, str) for v in pushed[-2:]):
            found.add(_python3_name(pushed[-2], pushed[-1]))
        if name in _STRING_OPS:
            pushed.append(arg.decode("latin-1") if isinstance(arg, bytes) else arg)
        elif name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in _PUT_OPS:
            memo[arg] = pushed[-1] if pushed else None
        elif name in _GET_OPS:
            pushed.append(memo.get(arg))
        elif opcode.stack_after:
            pushed.append(None)
    return found


def _python3_name(module: str, name: str) -> str:
    """``module.name``, Python 2 names mapped as the unpicklers map them (``__builtin__.set``: ``builtins.set``)."""
    if (module, name) in NAME_MAPPING:
        module, name = NAME_MAPPING[module, name]
    else:
        module = IMPORT_MAPPING.get(module, module)
    return f"{module}.{name}"


def _allowed_globals() -> set[str]:
    """``module.name`` of every global ``torch.load(weights_only=True)`` accepts here."""
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS}
    try:  # torch's own allow-list (private helpers; without them only SAFE_GLOBALS count as allowed)
        from torch import _weights_only_unpickler as unpickler

        allowed |= set(unpickler._get_allowed_globals()) | set(unpickler._get_user_allowed_globals())
    except (ImportError, AttributeError):
        pass
    return allowed
