"""CLIP encoding throughput and zero-shot classifier build time.

    python benchmarks/clip.py [--device cpu|cuda] [--batch 32] [--classes 1000] [--templates 80]

Rows:
- image / text encoding throughput of the tiny test model (``test-nvclip-clip-tiny``, 64 px) and of a ViT-B/32-sized
  CLIP built from open_clip's ``ViT-B-32`` config with random weights (224 px, 12-layer 512-wide text tower; speed does
  not depend on the weights);
- the zero-shot classifier for ``classes x templates`` prompts (default 1,000 x 80 = 80,000 texts, open_clip's
  builder, 10 classes per forward) with the tiny text tower; the ViT-B/32 text tower's texts/s row gives its time.
"""

from __future__ import annotations

import argparse
import os
import time

import open_clip
import torch

from vfmkit.models.backbones.open_clip_family import OpenClipVisionBackbone, build_vision_tower
from vfmkit.models.backbones.timm_family import preprocessing_from_entry
from vfmkit.models.clip import ClipModel, ImageTower
from vfmkit.models.clip_zoo import load_clip_model
from vfmkit.models.registry import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ModelEntry
from vfmkit.models.text.tokenizers import ClipBpeTokenizer
from vfmkit.models.text.towers import build_text_tower
from vfmkit.tasks.clip.zeroshot import build_classifier


def vit_b32() -> ClipModel:
    """A random-init ViT-B/32 CLIP (open_clip config) as a ClipModel."""
    entry = ModelEntry(
        id="bench-vit-b32",
        family="open_clip",
        arch={"model_name": "ViT-B-32"},
        description="benchmark",
        license="-",
        params_m=None,
        patch_size=32,
        preferred_resolution=224,
        max_resolution=224,
        mean=OPENAI_CLIP_MEAN,
        std=OPENAI_CLIP_STD,
        summary_dim=512,
        feature_dim=768,
    )
    vision = OpenClipVisionBackbone(build_vision_tower(entry), preprocessing_from_entry(entry))
    text = build_text_tower(open_clip.get_model_config("ViT-B-32"), "ViT-B-32")
    return ClipModel(ImageTower(vision), text, ClipBpeTokenizer(77), 2.659, None, "ViT-B-32 (random)").eval()


def _rate(fn, items: int, repeats: int, device: str) -> float:
    """items per second of ``fn`` (one warm-up call, then ``repeats`` timed calls)."""
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return items * repeats / (time.perf_counter() - start)


@torch.inference_mode()
def encoding_rows(model: ClipModel, name: str, batch: int, repeats: int, device: str) -> list[str]:
    side = model.preprocessing.preferred_resolution[0]
    images = torch.rand(batch, 3, side, side, device=device)
    ids = model.tokenize([f"a photo of a number {i} thing" for i in range(batch)]).to(device)
    image_rate = _rate(lambda: model.encode_image(images), batch, repeats, device)
    text_rate = _rate(lambda: model.encode_text(ids), batch, repeats, device)
    return [
        f"| {name} | image encode, {side} px, batch {batch} | {image_rate:,.1f} images/s |",
        f"| {name} | text encode, context {model.context_length}, batch {batch} | {text_rate:,.1f} texts/s |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--templates", type=int, default=80)
    args = parser.parse_args()
    tiny = load_clip_model("test-nvclip-clip-tiny").to(args.device)
    base = vit_b32().to(args.device)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}\n")
    print("| model | what | throughput |\n|---|---|---|")
    for row in encoding_rows(tiny, "tiny (test-nvclip-clip-tiny)", args.batch, args.repeats, args.device):
        print(row)
    for row in encoding_rows(base, "ViT-B/32 random init", args.batch, args.repeats, args.device):
        print(row)
    names = [f"class {i}" for i in range(args.classes)]
    templates = [f"a photo of a {{}} number {t}." for t in range(args.templates)]
    start = time.perf_counter()
    classifier = build_classifier(tiny, names, templates)
    seconds = time.perf_counter() - start
    texts = args.classes * args.templates
    print(
        f"| tiny text tower | zero-shot classifier {args.classes} classes x {args.templates} templates "
        f"({texts:,} texts) -> {tuple(classifier.shape)} | {seconds:.1f} s ({texts / seconds:,.0f} texts/s) |"
    )


if __name__ == "__main__":
    main()
