"""Text tokenizers of CLIP text towers: the CLIP BPE tokenizer shipped inside open_clip and Hugging Face tokenizers
(SigLIP, SigLIP2, BERT for CLIPA) read from a ``tokenizer.json``.

Two contracts hold for every tokenizer here:

- text is cleaned first: ``lower`` (CLIP: ftfy fix, whitespace collapse, lower case), ``whitespace`` or
  ``canonicalize`` (big_vision / SigLIP: underscores to spaces, punctuation removed, lower case, whitespace
  collapsed; open_clip's own function). SigLIP towers were trained on canonical text: without it zero-shot accuracy
  drops by about 12 points (NVlabs/RADIO PR #142);
- token ids are ALWAYS padded (or truncated) to the tower's ``context_length``: SigLIP towers pool the last position
  of a fixed-length, bidirectional sequence, so a shorter padding silently changes every embedding (mteb PR #1424).

A tokenizer maps a list of N strings to int64 ``(N, context_length)`` ids (:meth:`TextTokenizer.__call__`), or to a
:class:`TokenBatch` with the attention mask (:meth:`TextTokenizer.encode`). :meth:`TextTokenizer.save` writes the
files beside a checkpoint or an ONNX export; :func:`load_tokenizer_folder` reads them back.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from open_clip.tokenizer import SimpleTokenizer, canonicalize_text, default_bpe, get_clean_fn

from vfmkit.errors import ModelNotFoundError
from vfmkit.utils.atomic import naming_the_target

__all__ = [
    "CLEAN_MODES",
    "ClipBpeTokenizer",
    "HfTokenizer",
    "TextTokenizer",
    "TokenBatch",
    "canonicalize_text",
    "clean_text",
    "load_tokenizer_folder",
]

CleanMode = Literal["lower", "whitespace", "canonicalize"]
CLEAN_MODES = ("lower", "whitespace", "canonicalize")
CONFIG_FILE = "vfmkit_tokenizer.json"
"""What :meth:`TextTokenizer.save` writes beside the vocabulary files: kind, context length, cleaning."""
_HF_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def clean_text(text: str, mode: CleanMode) -> str:
    """``text`` cleaned as the tokenizers do before encoding (open_clip's cleaning functions)."""
    if mode not in CLEAN_MODES:
        raise ValueError(f"text cleaning must be one of {', '.join(CLEAN_MODES)}, got {mode!r}")
    return get_clean_fn(mode)(text)


@dataclass
class TokenBatch:
    """Tokenized text.

    Attributes:
        input_ids: int64 (N, context_length) token ids, padded on the right.
        attention_mask: int64 (N, context_length), 1 on real tokens (special tokens included), 0 on padding.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor


class TextTokenizer(ABC):
    """Base of the tokenizers: cleaning mode, fixed context length, save/describe."""

    kind: str
    context_length: int
    clean: CleanMode

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        """int64 (N, context_length) token ids of ``texts`` (one string counts as a list of one)."""
        return self.encode(texts).input_ids

    @abstractmethod
    def encode(self, texts: str | Sequence[str]) -> TokenBatch:
        """Ids and attention mask, always ``context_length`` wide."""

    @abstractmethod
    def with_clean(self, clean: CleanMode) -> TextTokenizer:
        """The same tokenizer with another cleaning mode (``model.canonicalize_text`` overrides)."""

    @abstractmethod
    def _write_files(self, folder: Path) -> None:
        """Write the vocabulary files into ``folder``."""

    def _config(self) -> dict[str, Any]:
        return {"kind": self.kind, "context_length": self.context_length, "clean": self.clean}

    def describe(self) -> dict[str, Any]:
        """What to record with a result: kind, context length, cleaning and ``padding: max_length``."""
        return {**self._config(), "padding": "max_length"}

    def save(self, folder: str | Path) -> Path:
        """Write the tokenizer files and :data:`CONFIG_FILE` into ``folder`` atomically (a staging folder beside it
        replaces the files only once all are written); returns the folder."""
        folder = Path(folder)
        with naming_the_target(folder):  # a disk error names the folder (the staging files are gone)
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder, prefix=".tokenizer.") as tmp:
                staging = Path(tmp)
                self._write_files(staging)
                (staging / CONFIG_FILE).write_text(json.dumps(self._config(), indent=2) + "\n")
                for file in staging.iterdir():
                    os.replace(file, folder / file.name)
        return folder


def _as_list(texts: str | Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be strings")
    return texts


class ClipBpeTokenizer(TextTokenizer):
    """open_clip's ``SimpleTokenizer`` (CLIP byte-level BPE, 49408 ids; vocabulary shipped in the open_clip wheel).

    Ids are ``<start_of_text> tokens <end_of_text>`` then 0-padding to ``context_length``; a longer text is cut and its
    last id replaced by ``<end_of_text>`` (as OpenAI CLIP). Since ``<end_of_text>`` (49407) is the largest id, the
    attention mask is every position up to the first argmax.

    Args:
        context_length: ids per text (CLIP: 77).
        clean: text cleaning (CLIP: ``lower``).
        bpe_path: the merges file (default: the one inside open_clip).
    """

    kind = "clip_bpe"

    def __init__(self, context_length: int = 77, clean: CleanMode = "lower", bpe_path: str | Path | None = None):
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2, got {context_length}")
        clean_text("", clean)  # validates the mode
        self.context_length = int(context_length)
        self.clean = clean
        self.bpe_path = Path(bpe_path or default_bpe())
        self._tokenizer = SimpleTokenizer(bpe_path=str(self.bpe_path), context_length=self.context_length, clean=clean)
        self.vocab_size = self._tokenizer.vocab_size
        self.eot_token_id = self._tokenizer.eot_token_id

    def encode(self, texts: str | Sequence[str]) -> TokenBatch:
        ids = self._tokenizer(_as_list(texts), context_length=self.context_length)
        positions = torch.arange(self.context_length).unsqueeze(0)
        mask = (positions <= ids.argmax(dim=-1, keepdim=True)).long()
        return TokenBatch(input_ids=ids, attention_mask=mask)

    def with_clean(self, clean: CleanMode) -> ClipBpeTokenizer:
        return ClipBpeTokenizer(self.context_length, clean, self.bpe_path)

    def _write_files(self, folder: Path) -> None:
        shutil.copyfile(self.bpe_path, folder / self.bpe_path.name)

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "bpe_file": self.bpe_path.name}


def _token_string(value: dict[str, Any]) -> str | None:
    """The token string of a special token written as an AddedToken dict in ``tokenizer_config.json``."""
    return value.get("content")


class HfTokenizer(TextTokenizer):
    """A Hugging Face fast tokenizer from ``tokenizer.json`` (the ``tokenizers`` package; no ``transformers``).

    It reproduces what open_clip's ``HFTokenizer`` (``AutoTokenizer`` with ``padding="max_length"``,
    ``truncation=True``) gives: the ``tokenizer.json`` pipeline, plus the Llama/Gemma-style ``add_bos_token`` /
    ``add_eos_token`` flags of ``tokenizer_config.json`` (SigLIP2's Gemma tokenizer: no BOS, EOS appended), right
    padding with the configured pad token, and optionally open_clip's ``strip_sep_token`` (CLIPA / BERT: [SEP]
    replaced by 0).

    Args:
        folder: a folder holding ``tokenizer.json`` (and optionally ``tokenizer_config.json``,
            ``special_tokens_map.json``).
        context_length: ids per text (SigLIP: 64).
        clean: text cleaning (SigLIP: ``canonicalize``).
        strip_sep_token: replace the separator token id by 0.
        source: where the files came from, for messages and records.

    Raises:
        ModelNotFoundError: no ``tokenizer.json`` in ``folder``.
    """

    kind = "hf"

    def __init__(
        self,
        folder: str | Path,
        context_length: int,
        clean: CleanMode = "canonicalize",
        strip_sep_token: bool = False,
        source: str | None = None,
    ) -> None:
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        file = self.folder / "tokenizer.json"
        if not file.is_file():
            raise ModelNotFoundError(f"no tokenizer.json in {self.folder} (expected a Hugging Face tokenizer folder)")
        clean_text("", clean)
        self.context_length = int(context_length)
        self.clean = clean
        self.strip_sep_token = bool(strip_sep_token)
        self.source = source or str(self.folder)
        self.settings = self._read_settings()
        self._tokenizer = Tokenizer.from_file(str(file))
        self._apply_bos_eos()
        pad_token = self.settings.get("pad_token")
        self.pad_id = self._tokenizer.token_to_id(pad_token) if pad_token else None
        self.pad_id = 0 if self.pad_id is None else self.pad_id
        self._tokenizer.enable_truncation(max_length=self.context_length)
        self._tokenizer.enable_padding(
            direction="right", pad_id=self.pad_id, pad_token=pad_token or "", length=self.context_length
        )
        sep = self.settings.get("sep_token")
        self.sep_id = self._tokenizer.token_to_id(sep) if sep else None
        if self.strip_sep_token and self.sep_id is None:
            raise ModelNotFoundError(f"{self.source}: strip_sep_token is set but the tokenizer has no sep_token")

    def _read_settings(self) -> dict[str, Any]:
        """Special tokens and flags from ``special_tokens_map.json`` and ``tokenizer_config.json`` (the latter wins)."""
        settings: dict[str, Any] = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            path = self.folder / name
            if path.is_file():
                data = json.loads(path.read_text(encoding="utf-8"))
                for key, value in data.items():
                    settings[key] = _token_string(value) if isinstance(value, dict) else value
        return settings

    def _apply_bos_eos(self) -> None:
        """Rebuild the post-processor from ``add_bos_token`` / ``add_eos_token``, as transformers' Llama and Gemma
        fast tokenizers do (``update_post_processor``); other tokenizers keep ``tokenizer.json``'s."""
        if "add_bos_token" not in self.settings and "add_eos_token" not in self.settings:
            return
        from tokenizers.processors import TemplateProcessing

        bos = self._special("bos_token") if self.settings.get("add_bos_token", True) else None
        eos = self._special("eos_token") if self.settings.get("add_eos_token", False) else None
        single = " ".join([*([f"{bos[0]}:0"] if bos else []), "$A:0", *([f"{eos[0]}:0"] if eos else [])])
        special = dict(t for t in (bos, eos) if t)
        self._tokenizer.post_processor = TemplateProcessing(
            single=single, pair=f"{single} $B:1", special_tokens=list(special.items())
        )

    def _special(self, name: str) -> tuple[str, int] | None:
        """(token, id) of a special token named in the settings, None when unset."""
        token = self.settings.get(name)
        if not token:
            return None
        token_id = self._tokenizer.token_to_id(token)
        if token_id is None:
            raise ModelNotFoundError(f"{self.source}: {name} {token!r} is not in the vocabulary")
        return token, token_id

    def encode(self, texts: str | Sequence[str]) -> TokenBatch:
        cleaned = [clean_text(t, self.clean) for t in _as_list(texts)]
        encodings = self._tokenizer.encode_batch(cleaned)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long).reshape(len(cleaned), self.context_length)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long).reshape(ids.shape)
        if self.strip_sep_token:
            ids = torch.where(ids == self.sep_id, torch.zeros_like(ids), ids)
        return TokenBatch(input_ids=ids, attention_mask=mask)

    def with_clean(self, clean: CleanMode) -> HfTokenizer:
        return HfTokenizer(self.folder, self.context_length, clean, self.strip_sep_token, self.source)

    def _write_files(self, folder: Path) -> None:
        for name in _HF_FILES:
            if (self.folder / name).is_file():
                shutil.copyfile(self.folder / name, folder / name)

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "strip_sep_token": self.strip_sep_token, "source": self.source}


def load_tokenizer_folder(folder: str | Path) -> TextTokenizer:
    """The tokenizer :meth:`TextTokenizer.save` wrote into ``folder``.

    Raises:
        ModelNotFoundError: no :data:`CONFIG_FILE`, or an unknown kind.
    """
    folder = Path(folder)
    config_file = folder / CONFIG_FILE
    if not config_file.is_file():
        raise ModelNotFoundError(f"no {CONFIG_FILE} in {folder} (not a folder written by TextTokenizer.save)")
    config = json.loads(config_file.read_text())
    if config.get("kind") == ClipBpeTokenizer.kind:
        return ClipBpeTokenizer(config["context_length"], config["clean"], folder / config["bpe_file"])
    if config.get("kind") == HfTokenizer.kind:
        return HfTokenizer(
            folder, config["context_length"], config["clean"], config.get("strip_sep_token", False), config["source"]
        )
    raise ModelNotFoundError(f"{config_file}: unknown tokenizer kind {config.get('kind')!r}")
