"""Segmentation inference throughput on CPU: a ViT-B RADIO + ViT-Adapter + SegFormer head at 512x512, and the share
of the time spent inside multi-scale deformable attention (the grid_sample core).

    python benchmarks/segment.py [--resolution 512] [--batch 1] [--rounds 3] [--neck vit_adapter]

Random init (speed does not depend on the weights); 19 classes (Cityscapes-sized head).
"""

from __future__ import annotations

import argparse
import time

import torch

import vfmkit.models.necks.msdeform_attn as msda
from vfmkit import load_backbone
from vfmkit.models.heads.segformer import Segmenter


def timed_core() -> list[float]:
    """Wrap the deformable-attention core with a timer; returns the list the timings go to."""
    spent: list[float] = []
    core = msda.ms_deform_attn

    def timed(*args, **kwargs):
        tic = time.perf_counter()
        out = core(*args, **kwargs)
        spent.append(time.perf_counter() - tic)
        return out

    msda.ms_deform_attn = timed
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="c-radio-v2-b")
    parser.add_argument("--neck", default="vit_adapter", choices=["vit_adapter", "simple_pyramid"])
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = Segmenter(load_backbone(args.backbone, pretrained=False), 19, neck=args.neck).eval()
    images = torch.rand(args.batch, 3, args.resolution, args.resolution)
    spent = timed_core()
    with torch.inference_mode():
        model(images)  # warm-up
        spent.clear()
        start = time.perf_counter()
        for _ in range(args.rounds):
            model(images)
        total = time.perf_counter() - start
        backbone_start = time.perf_counter()
        for _ in range(args.rounds):
            model.backbone(images)
        backbone = time.perf_counter() - backbone_start
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}; {args.backbone} (random init) + "
        f"{args.neck} + SegFormer head, {params:.1f}M parameters, {args.resolution}px, batch {args.batch}"
    )
    print("| measurement | value |")
    print("|---|---|")
    print(f"| images/s (whole model) | {args.batch * args.rounds / total:.3f} |")
    print(f"| seconds per image | {total / (args.batch * args.rounds):.2f} |")
    print(f"| backbone alone, seconds per image | {backbone / (args.batch * args.rounds):.2f} |")
    if spent:
        print(f"| share in deformable attention (ms_deform_attn) | {100 * sum(spent) / total:.1f}% |")


if __name__ == "__main__":
    main()
