"""Feature-extraction throughput and memory: a ViT-B RADIO vs a plain timm ViT-B/16, and decoding + preprocessing.

Prints a markdown table (images/s per resolution and batch size, peak memory) and the peak memory of one
2048x2048 RADIO forward (16,384 tokens).

Throughput of the models is measured in ONE process with the forwards interleaved (RADIO, timm, timm+registers,
RADIO, ...), so clock drift and background load hit all of them alike; peak memory is measured in a fresh
subprocess per model (peak RSS above the loaded model on CPU, max allocated on GPU).

    python benchmarks/embed.py                       # fp32 CPU, 224/512 x batch 1/8/32, plus the 2048 forward
    python benchmarks/embed.py --device cuda --dtype bf16 --compile   # on a GPU machine

All models use random init: throughput does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

MODELS = ("radio", "timm", "timm8")
NAIVE_ATTENTION_GIB = 16384**2 * 4 * 12 / 2**30  # one fp32 N x N score matrix per head, 12 heads, batch 1


def build(name: str) -> torch.nn.Module:
    """``radio``: c-radio-v2-b architecture (ViT-B/16 blocks + CPE, 4 cls + 4 register tokens);
    ``timm``: vit_base_patch16_224 (1 cls token); ``timm8``: the same with 7 registers, so 8 prefix tokens like RADIO.
    """
    if name == "radio":
        from vfmkit import load_backbone

        return load_backbone("c-radio-v2-b", pretrained=False)
    import timm

    extra = {"reg_tokens": 7} if name == "timm8" else {}
    return timm.create_model(
        "vit_base_patch16_224", pretrained=False, num_classes=0, dynamic_img_size=True, **extra
    ).eval()


def _context(args: argparse.Namespace):
    device_type = args.device.split(":")[0]
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def throughput(resolution: int, batch: int, args: argparse.Namespace) -> dict[str, float]:
    """images/s of each model, forwards interleaved for at least ``rounds`` rounds and ``min_seconds``."""
    torch.manual_seed(0)
    models = {name: build(name).to(args.device) for name in MODELS}
    if args.compile:
        models = {name: torch.compile(model) for name, model in models.items()}
    images = torch.rand(batch, 3, resolution, resolution, device=args.device)
    spent = dict.fromkeys(MODELS, 0.0)
    with torch.inference_mode(), _context(args):
        for model in models.values():
            model(images)  # warm-up (and compilation)
        rounds, start = 0, time.perf_counter()
        while rounds < args.rounds or time.perf_counter() - start < args.min_seconds:
            for name, model in models.items():
                _sync(args.device)
                tic = time.perf_counter()
                model(images)
                _sync(args.device)
                spent[name] += time.perf_counter() - tic
            rounds += 1
    return {name: batch * rounds / seconds for name, seconds in spent.items()}


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_memory(name: str, resolution: int, batch: int, args: argparse.Namespace) -> dict[str, float]:
    """Peak memory of one forward above the loaded model: MiB of RSS (CPU) or of allocations (GPU), and seconds."""
    model = build(name).to(args.device)
    images = torch.rand(batch, 3, resolution, resolution, device=args.device)
    base = _rss_mib()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    start = time.perf_counter()
    with torch.inference_mode(), _context(args):
        model(images)
    _sync(args.device)
    seconds = time.perf_counter() - start
    if args.device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_mib": peak - base, "seconds": seconds}


def make_images(folder: Path, count: int = 48) -> list[Path]:
    """Photo-like JPEGs (640x480, smooth gradients + noise)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640]
    paths = []
    for i in range(count):
        base = np.stack([xx / 640 * 255, yy / 480 * 255, (xx + yy) % 256], axis=-1)
        pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        paths.append(folder / f"img_{i:03d}.jpg")
        Image.fromarray(pixels).save(paths[-1], quality=90)
    return paths


def decode_throughput(resolution: int) -> float:
    """images/s of decoding JPEGs + vfmkit preprocessing alone (one process)."""
    from vfmkit import load_backbone
    from vfmkit.data.preprocess import preprocess_images

    preprocessing = load_backbone("test-radio-v2-tiny").preprocessing
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_images(Path(tmp))
        preprocess_images(paths[:4], preprocessing, resolution=resolution)
        start = time.perf_counter()
        for i in range(0, len(paths), 16):
            preprocess_images(paths[i : i + 16], preprocessing, resolution=resolution)
        return len(paths) / (time.perf_counter() - start)


def _worker(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    kind, res, batch = args.worker, args.resolution, args.batch
    if kind == "throughput":
        return throughput(res, batch, args)
    if kind == "decode":
        return {"img_s": decode_throughput(res)}
    return peak_memory(kind, res, batch, args)


def spawn(kind: str, resolution: int, batch: int, args: argparse.Namespace) -> dict:
    """Run one measurement in a fresh Python process and return its JSON result."""
    cmd = [sys.executable, __file__, "--worker", kind, "--resolution", str(resolution), "--batch", str(batch)]
    cmd += ["--rounds", str(args.rounds), "--min-seconds", str(args.min_seconds), "--device", args.device]
    cmd += ["--dtype", args.dtype, "--threads", str(args.threads)] + (["--compile"] if args.compile else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[224, 512])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=2, help="at least this many interleaved rounds per row")
    parser.add_argument("--min-seconds", type=float, default=20.0, help="and at least this long per row")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-2048", action="store_true", help="skip the 2048x2048 memory run")
    parser.add_argument("--worker", choices=["throughput", "decode", *MODELS], help=argparse.SUPPRESS)
    parser.add_argument("--resolution", type=int, default=224, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = _parser().parse_args()
    if args.worker:
        print(json.dumps(_worker(args)))
        return
    print(f"torch {torch.__version__}, {args.device}, {args.dtype}, threads {args.threads}, compile {args.compile}")
    print(
        "| res | batch | RADIO img/s | timm ViT-B img/s | RADIO / timm | timm ViT-B + 7 reg img/s | RADIO / timm+reg "
        "| RADIO peak +MiB | timm peak +MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for res in args.resolutions:
        for batch in args.batches:
            speed = spawn("throughput", res, batch, args)
            mem = {name: spawn(name, res, batch, args)["peak_mib"] for name in ("radio", "timm")}
            radio, plain, regs = speed["radio"], speed["timm"], speed["timm8"]
            print(
                f"| {res} | {batch} | {radio:.2f} | {plain:.2f} | {radio / plain:.3f} | {regs:.2f} "
                f"| {radio / regs:.3f} | {mem['radio']:.0f} | {mem['timm']:.0f} |"
            )
        decode = spawn("decode", res, 16, args)["img_s"]
        print(
            f"| {res} | decode + preprocess | {decode:.1f} | | {decode / speed['radio']:.1f}x RADIO at batch {batch} "
            "| | | | |"
        )
    if not args.skip_2048:
        big = spawn("radio", 2048, 1, args)
        print(
            f"\nRADIO ViT-B forward at 2048x2048 (16,384 tokens), batch 1: peak +{big['peak_mib']:.0f} MiB above the "
            f"loaded model, {big['seconds']:.1f} s; one materialised fp32 attention matrix per head would need "
            f"{NAIVE_ATTENTION_GIB:.1f} GiB"
        )


if __name__ == "__main__":
    main()
