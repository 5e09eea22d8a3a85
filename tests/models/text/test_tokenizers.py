"""Tokenizer contracts: canonical cleaning, always padding to the context length, save/load; the padding trap."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from vfmkit.errors import ModelNotFoundError
from vfmkit.models.text.tokenizers import ClipBpeTokenizer, HfTokenizer, clean_text, load_tokenizer_folder
from vfmkit.models.text.zoo import load_text_tower


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A Photo of a DOG.", "a photo of a dog"),
        ("tabby_cat", "tabby cat"),
        ("  it's   a   (small)  cat!?  ", "its a small cat"),
        ("Motor-bike, red", "motorbike red"),
    ],
)
def test_canonical_cleaning(text: str, expected: str) -> None:
    assert clean_text(text, "canonicalize") == expected


def test_clip_bpe_pads_truncates_and_masks() -> None:
    tokenizer = ClipBpeTokenizer(context_length=8)
    batch = tokenizer.encode(["a red circle", "one two three four five six seven eight nine", ""])
    ids, mask = batch.input_ids, batch.attention_mask
    assert ids.shape == mask.shape == (3, 8) and ids.dtype == torch.int64
    assert ids[0, :5].tolist() == [49406, 320, 736, 7117, 49407] and ids[0, 5:].tolist() == [0, 0, 0]
    assert mask[0].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
    assert ids[1, -1] == 49407 and mask[1].all()  # cut, end-of-text kept last
    assert ids[2, :2].tolist() == [49406, 49407] and mask[2].sum() == 2
    assert torch.equal(tokenizer("a red circle"), ids[:1])
    assert torch.equal(tokenizer.with_clean("canonicalize")("A red, circle!"), ids[:1])


def _hf_folder(tmp_path, *, sep: bool = False):
    """A word-level tokenizer.json + tokenizer_config.json like SigLIP2 (no BOS, EOS) or BERT ([CLS] [SEP])."""
    vocab = {"<pad>": 0, "</s>": 1, "<bos>": 2, "[UNK]": 3, "[CLS]": 4, "[SEP]": 5, "a": 6, "red": 7, "circle": 8}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    if sep:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 4), ("[SEP]", 5)]
        )
        config = {"pad_token": "<pad>", "sep_token": "[SEP]"}
    else:
        config = {"add_bos_token": False, "add_eos_token": True, "bos_token": "<bos>", "eos_token": "</s>"}
        config["pad_token"] = {"content": "<pad>", "lstrip": False}
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    return tmp_path


def test_hf_tokenizer_canonicalises_appends_eos_and_pads(tmp_path) -> None:
    tokenizer = HfTokenizer(_hf_folder(tmp_path), context_length=6)
    batch = tokenizer.encode(["A Red_Circle!", "a red circle a red circle"])
    assert batch.input_ids.tolist() == [[6, 7, 8, 1, 0, 0], [6, 7, 8, 6, 7, 1]]  # truncation keeps the EOS
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6]
    plain = tokenizer.with_clean("whitespace")("A Red_Circle!")
    assert plain[0, 0].item() == 3  # no canonicalisation: "A" is unknown


def test_hf_tokenizer_strips_the_separator(tmp_path) -> None:
    tokenizer = HfTokenizer(_hf_folder(tmp_path, sep=True), context_length=6, clean="whitespace", strip_sep_token=True)
    assert tokenizer("a red").tolist() == [[4, 6, 7, 0, 0, 0]]


def test_hf_tokenizer_needs_tokenizer_json(tmp_path) -> None:
    with pytest.raises(ModelNotFoundError, match="no tokenizer.json"):
        HfTokenizer(tmp_path, context_length=8)


@pytest.mark.parametrize("kind", ["bpe", "hf"])
def test_save_and_reload(tmp_path, kind: str) -> None:
    tokenizer = ClipBpeTokenizer(16, "canonicalize") if kind == "bpe" else HfTokenizer(_hf_folder(tmp_path), 6)
    folder = tokenizer.save(tmp_path / "saved")
    again = load_tokenizer_folder(folder)
    texts = ["A red circle.", "red"]
    assert type(again) is type(tokenizer) and again.describe() == tokenizer.describe()
    assert torch.equal(again(texts), tokenizer(texts))
    assert tokenizer.describe()["padding"] == "max_length"


def test_siglip_style_tower_depends_on_padding_so_tokenizers_always_pad() -> None:
    """SigLIP towers pool the last position of a bidirectional sequence: any other padding changes the embedding
    (mteb #1424); CLIP-style towers (causal mask, end-of-text pooling) ignore what follows the text. TextTower refuses
    ids of another length than its context."""
    ids = ClipBpeTokenizer(16)(["a red circle"])
    other_padding = torch.where(ids == 0, torch.full_like(ids, 320), ids)
    siglip, _ = load_text_tower("test-siglip-text-tiny")
    clip, _ = load_text_tower("test-clip-text-tiny")
    with torch.no_grad():
        reference = siglip.text(ids)
        assert not torch.allclose(reference, siglip.text(ids[:, :8]), atol=1e-3)  # padded to 8 instead of 16
        assert not torch.allclose(reference, siglip.text(other_padding), atol=1e-3)
        torch.testing.assert_close(clip.text(ids), clip.text(other_padding))
    for tower in (siglip, clip):
        with pytest.raises(ValueError, match=r"always padded to the context length"):
            tower(ids[:, :8])
