"""CLIP encoding throughput and zero-shot classifier build time.

    python benchmarks/clip.py [--device cpu|cuda] [--batch 32] [--classes 1000] [--templates 80] [--rounds 3]

Rows:
- image / text encoding throughput of the tiny test model (``test-nvclip-clip-tiny``, 64 px) and of a ViT-B/32-sized
  CLIP built from open_clip's ``ViT-B-32`` config with random weights (224 px, 12-layer 512-wide text tower; speed does
  not depend on the weights). The rows run interleaved for ``--rounds`` rounds and report the median; besides the
  wall-clock rate, the rate per CPU-second of this process (CPU only) shows how much a loaded machine slowed it;
- the zero-shot classifier for ``classes x templates`` prompts (default 1,000 x 80 = 80,000 texts, open_clip's
  builder, 10 classes per forward): measured in full with the tiny text tower; with the ViT-B/32 text tower it is
  measured on ``--base-classes`` classes and scaled to ``classes`` (the builder's cost is linear in the classes).
"""

from __future__ import annotations

import argparse
import os
import statistics
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


def _rate(fn, items: int, repeats: int, device: str) -> tuple[float, float]:
    """(items per wall second, items per CPU second of this process) of ``fn``: one warm-up call, then ``repeats``."""
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return items * repeats / wall, items * repeats / max(cpu, 1e-9)


@torch.inference_mode()
def encoders(model: ClipModel, batch: int, device: str) -> dict[str, tuple]:
    """What one row times: (label, function) for the image and the text encoder."""
    side = model.preprocessing.preferred_resolution[0]
    images = torch.rand(batch, 3, side, side, device=device)
    ids = model.tokenize([f"a photo of a number {i} thing" for i in range(batch)]).to(device)
    return {
        "image": (f"image encode, {side} px, batch {batch}", lambda: model.encode_image(images), "images"),
        "text": (
            f"text encode, context {model.context_length}, batch {batch}",
            lambda: model.encode_text(ids),
            "texts",
        ),
    }


def encoding_rows(models: dict[str, ClipModel], args) -> list[str]:
    """Median rates over interleaved rounds (every model and encoder once per round)."""
    rates: dict[tuple[str, str], list[tuple[float, float]]] = {}
    jobs = {name: encoders(model, args.batch, args.device) for name, model in models.items()}
    with torch.inference_mode():
        for _ in range(args.rounds):
            for name, job in jobs.items():
                for kind, (_, fn, _) in job.items():
                    rates.setdefault((name, kind), []).append(_rate(fn, args.batch, args.repeats, args.device))
    rows = []
    for (name, kind), values in rates.items():
        label, _, unit = jobs[name][kind]
        wall = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        per_cpu = f"{cpu:,.1f} {unit}/CPU-s" if args.device == "cpu" else "-"
        rows.append(f"| {name} | {label} | {wall:,.1f} {unit}/s | {per_cpu} |")
    return rows


def classifier_row(model: ClipModel, name: str, classes: int, templates: int, measured: int) -> str:
    """Build the zero-shot classifier for ``measured`` classes and scale its time to ``classes``."""
    prompts = [f"a photo of a {{}} number {t}." for t in range(templates)]
    start = time.perf_counter()
    classifier = build_classifier(model, [f"class {i}" for i in range(measured)], prompts)
    seconds = (time.perf_counter() - start) * classes / measured
    texts = classes * templates
    how = "measured" if measured == classes else f"{measured} classes measured, scaled x{classes / measured:g}"
    return (
        f"| {name} | zero-shot classifier {classes} classes x {templates} templates ({texts:,} texts) -> "
        f"({classifier.shape[0]}, {classes}) | {seconds:,.1f} s ({texts / seconds:,.0f} texts/s; {how}) | - |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--templates", type=int, default=80)
    parser.add_argument("--base-classes", type=int, default=20, help="classes measured with the ViT-B/32 text tower")
    args = parser.parse_args()
    models = {
        "tiny (test-nvclip-clip-tiny)": load_clip_model("test-nvclip-clip-tiny").to(args.device),
        "ViT-B/32 random init": vit_b32().to(args.device),
    }
    load = os.getloadavg()[0]
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, load average {load:.1f} at the start\n")
    print("| model | what | throughput | per CPU-second |\n|---|---|---|---|")
    for row in encoding_rows(models, args):
        print(row)
    tiny, base = models.values()
    print(classifier_row(tiny, "tiny text tower", args.classes, args.templates, args.classes))
    base_classes = min(args.base_classes, args.classes) if args.device == "cpu" else args.classes
    print(classifier_row(base, "ViT-B/32 text tower", args.classes, args.templates, base_classes))
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
