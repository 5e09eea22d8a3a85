"""Universal-segmentation inference throughput on CPU: a ViT-B RADIO (c-radio-v2-b architecture, random init) + the
simple feature pyramid (TAO's D2RADIO) + the MSDeformAttn pixel decoder + the masked-attention decoder (Mask2Former
or OneFormer head, TAO's default sizes: 150 queries, 10 predictions, hidden 256, 6 encoder layers), with the share
of the time spent in each stage.

    python benchmarks/universal.py [--resolutions 512 1024] [--heads oneformer mask2former] [--rounds 2]

133 classes (COCO panoptic). Stage times come from forward hooks: backbone, neck (the pyramid convs, backbone
excluded), pixel decoder, decoder (OneFormer: task MLP + class transformer + masked-attention layers).
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict

import torch
from torch import nn

from vfmkit import load_backbone
from vfmkit.models.heads.mask2former import UniversalHeadConfig, UniversalSegmenter, task_tokens
from vfmkit.models.necks import build_neck


def stage_timer(stages: dict[str, nn.Module]) -> dict[str, float]:
    """Accumulate each module's forward time (seconds) under its stage name."""
    spent: dict[str, float] = defaultdict(float)
    for name, module in stages.items():
        starts: list[float] = []
        module.register_forward_pre_hook(lambda *_, s=starts: s.append(time.perf_counter()))
        module.register_forward_hook(lambda *_, s=starts, n=name: _add(spent, n, time.perf_counter() - s.pop()))
    return spent


def _add(spent: dict[str, float], name: str, seconds: float) -> None:
    spent[name] += seconds


def build(backbone: str, head: str) -> UniversalSegmenter:
    torch.manual_seed(0)
    neck = build_neck("simple_pyramid", load_backbone(backbone, pretrained=False), out_channels=256)
    return UniversalSegmenter(neck, 133, UniversalHeadConfig(head=head)).eval()


def stages(model: UniversalSegmenter) -> dict[str, nn.Module]:
    """The timed stages of a model (the task MLP is counted with the decoder)."""
    found = {
        "backbone": model.neck.backbone,
        "neck": model.neck,
        "pixel decoder": model.pixel_decoder,
        "decoder": model.predictor,
    }
    if model.task_mlp is not None:
        found["task MLP"] = model.task_mlp
    return found


def measure(
    model: UniversalSegmenter, spent: dict[str, float], resolution: int, batch: int, rounds: int
) -> tuple[float, dict[str, float]]:
    """(seconds per image, share per stage) of ``rounds`` forwards after a warm-up; ``spent`` is the model's timer."""
    images = torch.rand(batch, 3, resolution, resolution)
    tokens = task_tokens(["panoptic"] * batch) if model.needs_task else None
    with torch.inference_mode():
        model(images, tokens)
        spent.clear()
        start = time.perf_counter()
        for _ in range(rounds):
            model(images, tokens)
        total = time.perf_counter() - start
    share = {name: value / total for name, value in spent.items()}
    share["neck"] -= share["backbone"]
    share["decoder"] += share.pop("task MLP", 0.0)
    return total / (rounds * batch), share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="c-radio-v2-b")
    parser.add_argument("--heads", nargs="+", default=["oneformer", "mask2former"])
    parser.add_argument("--resolutions", nargs="+", type=int, default=[512, 1024])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, load average "
        f"{load:.1f} at start; {args.backbone} (random init) + simple pyramid (256 ch) + MSDeformAttn pixel "
        f"decoder + masked-attention decoder (TAO sizes), 133 classes, batch {args.batch}"
    )
    print(
        "| head | resolution | inference params (M) | images/s | s/image | backbone | neck | pixel decoder | decoder |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for head in args.heads:
        model = build(args.backbone, head)
        spent = stage_timer(stages(model))
        used = [p for n, p in model.named_parameters() if not n.startswith("text_mapper.")]  # training only
        params = sum(p.numel() for p in used) / 1e6
        for resolution in args.resolutions:
            seconds, share = measure(model, spent, resolution, args.batch, args.rounds)
            shares = " | ".join(f"{100 * share[n]:.1f}%" for n in ("backbone", "neck", "pixel decoder", "decoder"))
            print(f"| {head} | {resolution} | {params:.1f} | {1 / seconds:.3f} | {seconds:.2f} | {shares} |")


if __name__ == "__main__":
    main()
