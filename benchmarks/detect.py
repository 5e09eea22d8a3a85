"""Detection inference throughput: a ViT-B C-RADIO + simple feature pyramid + RT-DETR decoder at 640x640, the share
of time in backbone / neck / encoder (input projection + hybrid encoder) / decoder (two-stage query selection +
deformable decoder), peak memory; the same detector with the pyramid's unused stride-4 level built (as before the
detector asked for the levels it reads); and, when the ``rfdetr`` package can be imported, RF-DETR at the same
resolution and the img/s ratio.

    python benchmarks/detect.py [--resolution 640] [--batch 1] [--rounds 3] [--device cpu|cuda] [--dtype fp32|bf16]

Random init everywhere (speed does not depend on the weights; nothing is downloaded). Each model runs in its own
subprocess so its peak memory is its own (CPU: peak resident set size of that process, weights included; CUDA:
``torch.cuda.max_memory_allocated``). ``rfdetr`` is never a vfmkit dependency: install it for this script only, e.g.
``pip install --target /tmp/rfdetr-pkgs --no-deps rfdetr supervision transformers defusedxml pydeprecate`` and run
with ``PYTHONPATH=/tmp/rfdetr-pkgs``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from contextlib import nullcontext

import torch

RFDETR_VARIANTS = {"nano": "RFDETRNano", "small": "RFDETRSmall", "medium": "RFDETRMedium"}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _autocast(device: str, dtype: str):
    return torch.autocast(device, dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()


class StageTimer:
    """Accumulates the wall time spent inside chosen submodules (forward hooks)."""

    def __init__(self, device: str, **modules: torch.nn.Module) -> None:
        self.device, self.spent, self._start = device, dict.fromkeys(modules, 0.0), {}
        for name, module in modules.items():
            module.register_forward_pre_hook(lambda *_, n=name: self._begin(n))
            module.register_forward_hook(lambda *_, n=name: self._end(n))

    def _begin(self, name: str) -> None:
        _sync(self.device)
        self._start[name] = time.perf_counter()

    def _end(self, name: str) -> None:
        _sync(self.device)
        self.spent[name] += time.perf_counter() - self._start[name]

    def reset(self) -> None:
        self.spent = dict.fromkeys(self.spent, 0.0)


def _time(model: torch.nn.Module, images: torch.Tensor, args, timer: StageTimer | None = None) -> float:
    """Seconds for ``args.rounds`` forwards after one warm-up (the stage timer restarts after the warm-up)."""
    with torch.inference_mode(), _autocast(args.device, args.dtype):
        model(images)
        _sync(args.device)
        if timer is not None:
            timer.reset()
        start = time.perf_counter()
        for _ in range(args.rounds):
            model(images)
        _sync(args.device)
    return time.perf_counter() - start


def _peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def run_vfmkit(args, all_levels: bool = False) -> dict:
    """The detector; ``all_levels`` builds the simple pyramid's four levels (stride 4 computed but never read), as
    before the detector asked the pyramid for the levels it reads only."""
    from vfmkit.models.heads.detr import build_detector

    torch.manual_seed(0)
    options = {"strides": (4, 8, 16, 32)} if all_levels else None
    model, _ = build_detector(
        80,
        args.head,
        backbone=args.backbone,
        neck=args.neck,
        pretrained=False,
        neck_options=options,
        vitdet_window_size=args.vitdet_window_size,
    )
    model = model.eval().to(args.device)
    timer = StageTimer(
        args.device,
        backbone=model.source.neck.backbone,
        source=model.source,
        input_proj=model.input_proj,
        encoder=model.encoder,
    )
    images = torch.rand(args.batch, 3, args.resolution, args.resolution, device=args.device)
    total = _time(model, images, args, timer)
    spent = timer.spent
    levels = " (all 4 levels)" if all_levels else ""
    window = f" (ViTDet window {args.vitdet_window_size})" if args.vitdet_window_size else ""
    return {
        "name": f"vfmkit {args.backbone}{window} + {args.neck}{levels} + {args.head}",
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "img_s": args.batch * args.rounds / total,
        "backbone": spent["backbone"] / total,
        "neck": (spent["source"] - spent["backbone"]) / total,
        "encoder": (spent["input_proj"] + spent["encoder"]) / total,
        "decoder": 1 - (spent["source"] + spent["input_proj"] + spent["encoder"]) / total,
        "peak_mb": _peak_memory_mb(args.device),
    }


def run_rfdetr(args) -> dict:
    from importlib.metadata import version

    import rfdetr

    variant = getattr(rfdetr, RFDETR_VARIANTS[args.rfdetr])
    torch.manual_seed(0)
    wrapper = variant(pretrain_weights=None, resolution=args.resolution, device=args.device, num_classes=80)
    model = wrapper.model.model.eval().to(args.device)
    images = torch.rand(args.batch, 3, args.resolution, args.resolution, device=args.device)
    total = _time(model, images, args)
    return {
        "name": f"RF-DETR {args.rfdetr} (rfdetr {version('rfdetr')})",
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "img_s": args.batch * args.rounds / total,
        "peak_mb": _peak_memory_mb(args.device),
    }


def _child(args, which: str) -> dict:
    """Run one measurement in a fresh interpreter; returns its JSON result or ``{"error": ...}``."""
    command = [sys.executable, __file__, *sys.argv[1:], "--only", which]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail[:300]}
    return json.loads(lines[-1])


def _rfdetr_importable() -> str | None:
    """None when rfdetr imports, else why not."""
    check = subprocess.run([sys.executable, "-c", "import rfdetr"], capture_output=True, text=True, check=False)
    if check.returncode == 0:
        return None
    last = (check.stderr.strip().splitlines() or ["import failed"])[-1]
    return f"`import rfdetr` failed ({last[:200]}); see this script's docstring for a side install"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="c-radio-v2-b")
    parser.add_argument("--neck", default="simple_pyramid", choices=["simple_pyramid", "vit_adapter"])
    parser.add_argument("--vitdet-window-size", type=int, help="RADIO backbones: ViTDet windowed attention")
    parser.add_argument("--head", default="rtdetr", choices=["rtdetr", "dino"])
    parser.add_argument("--resolution", type=int, default=640)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--rfdetr", default="medium", choices=[*RFDETR_VARIANTS, "none"])
    parser.add_argument("--only", choices=["vfmkit", "vfmkit-all-levels", "rfdetr"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.only:
        runs = {"vfmkit": run_vfmkit, "vfmkit-all-levels": lambda a: run_vfmkit(a, True), "rfdetr": run_rfdetr}
        print(json.dumps(runs[args.only](args)))
        return
    rows = [_child(args, "vfmkit")]
    if args.neck == "simple_pyramid":
        rows.append(_child(args, "vfmkit-all-levels"))
    skipped = "--rfdetr none" if args.rfdetr == "none" else _rfdetr_importable()
    if skipped is None:
        rows.append(_child(args, "rfdetr"))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {args.device} {args.dtype}, threads {torch.get_num_threads()}, "
        f"{args.resolution}x{args.resolution}, batch {args.batch}, {args.rounds} rounds, random init; "
        f"load average at the end {load:.1f} on {os.cpu_count()} cores"
    )
    print("| model | params (M) | img/s | backbone | neck | encoder | decoder | peak memory (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| (failed: {row['error']}) | | | | | | | |")
            continue
        shares = " | ".join(
            f"{100 * row[k]:.0f}%" if k in row else "-" for k in ("backbone", "neck", "encoder", "decoder")
        )
        print(f"| {row['name']} | {row['params_m']:.1f} | {row['img_s']:.3f} | {shares} | {row['peak_mb']:.0f} |")
    if skipped is None and "img_s" in rows[0] and "img_s" in rows[-1]:
        print(f"\nimg/s ratio vfmkit / RF-DETR: {rows[0]['img_s'] / rows[-1]['img_s']:.2f}")
    elif skipped:
        print(f"\nRF-DETR skipped: {skipped}")


if __name__ == "__main__":
    main()
