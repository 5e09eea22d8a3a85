"""Detection inference throughput: vfmkit's light DETR presets (``lw-n`` / ``lw-s`` / ``lw-m``: DINOv2-S with patch 16
and 2 x 2 attention windows, the multi-layer projector, no encoder, 2 / 3 / 4 decoder layers) against RF-DETR nano /
small / medium at each one's resolution (384 / 512 / 576) and patch size (16), interleaved round by round in one
process per pair; PyTorch eager, onnxruntime fp32 and onnxruntime int8 (dynamic int8 weights, both graphs quantized
the same way); batch 1 and 8. Also the light preset on C-RADIOv2-B (windows) and C-RADIOv3-B (no windows, the
reference refuses them there), and the RT-DETR preset rows for contrast. Parameters and peak memory per row.

    python benchmarks/detect.py [--threads 2] [--rounds 5] [--rounds8 3] [--batches 1 8] [--device cpu|cuda]
        [--groups all|pairs|others] [--work DIR]

Random init everywhere (speed does not depend on the weights; nothing is downloaded). Each row's img/s is the batch
size over the median of its rounds' times (one forward each); pairs alternate vfmkit and RF-DETR every round so load
from other processes hits both alike. Peak memory comes from a separate fresh process per row (CPU: peak resident set
size, weights included; CUDA: ``torch.cuda.max_memory_allocated``). ``--device cuda`` gives eager bf16 (autocast)
and TensorRT fp16 rows instead (needs a GPU and ``pip install tensorrt``).

``rfdetr`` is never a vfmkit dependency: install it for this script only, e.g.
``pip install --target /work/side/rfdetr --no-deps rfdetr "transformers>=5.1,<6" supervision defusedxml pydeprecate``
and run with ``PYTHONPATH=/work/side/rfdetr``. Without it the RF-DETR rows are skipped.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch

MODELS = {  # name: how to build it, its input side; vfmkit rows: head, backbone, patch and window (patches)
    "rfdetr-nano": {"rfdetr": "RFDETRNano", "resolution": 384},
    "rfdetr-small": {"rfdetr": "RFDETRSmall", "resolution": 512},
    "rfdetr-medium": {"rfdetr": "RFDETRMedium", "resolution": 576},
    "lw-n dinov2-vit-s14": {"head": "lw-n", "resolution": 384, "patch": 16, "window": 12},
    "lw-s dinov2-vit-s14": {"head": "lw-s", "resolution": 512, "patch": 16, "window": 16},
    "lw-m dinov2-vit-s14": {"head": "lw-m", "resolution": 576, "patch": 16, "window": 18},
    "lw-m c-radio-v2-b": {"head": "lw-m", "resolution": 576, "window": 18},
    "lw-m c-radio-v3-b": {"head": "lw-m", "resolution": 576},
    "rtdetr c-radio-v2-b": {"head": "rtdetr", "resolution": 640},
    "rtdetr dinov2-vit-s14": {"head": "rtdetr", "resolution": 644},
}
PAIRS = [
    ("lw-n dinov2-vit-s14", "rfdetr-nano"),
    ("lw-s dinov2-vit-s14", "rfdetr-small"),
    ("lw-m dinov2-vit-s14", "rfdetr-medium"),
]
SINGLES = ["lw-m c-radio-v2-b", "lw-m c-radio-v3-b", "rtdetr c-radio-v2-b", "rtdetr dinov2-vit-s14"]
EAGER_ONLY = {"rtdetr c-radio-v2-b", "rtdetr dinov2-vit-s14"}
RUNTIMES = {"cpu": ("eager", "onnxruntime fp32", "onnxruntime int8"), "cuda": ("eager bf16", "tensorrt fp16")}


def build(name: str, device: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the model as users run it in eager mode, a module for export returning (pred_logits, pred_boxes))."""
    spec = MODELS[name]
    torch.manual_seed(0)
    if "rfdetr" in spec:
        import rfdetr

        wrapper = getattr(rfdetr, spec["rfdetr"])(pretrain_weights=None, num_classes=80, device=device)
        model = wrapper.model.model.eval()
        exportable = copy.deepcopy(model)
        exportable.export()  # RF-DETR's own export form: forward -> (boxes, logits)
        return model, _Swap(exportable)
    from vfmkit.models.heads.detr import build_detector
    from vfmkit.tasks.detect.model import ExportableDetector

    model, _ = build_detector(
        80,
        spec["head"],
        backbone=name.split()[1],
        pretrained=False,
        patch_size=spec.get("patch"),
        vitdet_window_size=spec.get("window"),
    )
    model = model.eval().to(device)
    return model, ExportableDetector(model).eval()


class _Swap(torch.nn.Module):
    """RF-DETR's export form returns (boxes, logits): give (logits, boxes) like vfmkit's graph."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        boxes, logits = self.model(images)[:2]
        return logits, boxes


def export_graphs(name: str, exportable: torch.nn.Module, work: Path, device: str) -> dict[str, Path]:
    """The fp32 graph (and the int8 one on the CPU, or a TensorRT fp16 engine on CUDA) of a model, cached in
    ``work``."""
    from vfmkit.export.onnx import export_onnx
    from vfmkit.tasks.detect.export import pin_position_grids

    size = MODELS[name]["resolution"]
    fp32 = _graph_path(name, "onnxruntime fp32", work)
    if not fp32.is_file():
        example = (torch.rand(1, 3, size, size),)
        module = pin_position_grids(exportable.cpu(), example)
        export_onnx(module, example, fp32, ["inputs"], ["pred_logits", "pred_boxes"], {})
    if device == "cuda":
        from vfmkit.export.tensorrt import build_tensorrt_engine

        engine = _graph_path(name, "tensorrt fp16", work)
        if not engine.is_file():
            build_tensorrt_engine(fp32, engine, "fp16", opt_batch=8, max_batch=8)
        return {"tensorrt fp16": engine}
    from vfmkit.export.quantize import quantize_int8

    int8 = _graph_path(name, "onnxruntime int8", work)
    if not int8.is_file():
        quantize_int8(fp32, int8)
    return {"onnxruntime fp32": fp32, "onnxruntime int8": int8}


def _graph_path(name: str, runtime: str, work: Path) -> Path:
    stem = name.replace(" ", "_")
    suffix = {"onnxruntime fp32": ".onnx", "onnxruntime int8": "_int8.onnx", "tensorrt fp16": ".engine"}[runtime]
    return work / f"{stem}{suffix}"


def runner(name: str, runtime: str, args, work: Path):
    """``run(images)``: one forward of ``name`` under ``runtime``; and the parameter count (M; None for a graph
    that was already exported: the model is then not built, so a memory probe holds only the graph)."""
    if runtime.startswith("eager"):
        model, _ = build(name, args.device)
        autocast = torch.autocast("cuda", torch.bfloat16) if args.device == "cuda" else nullcontext()

        def run(images):
            with torch.inference_mode(), autocast:
                model(images)
            if args.device == "cuda":
                torch.cuda.synchronize()

        return run, sum(p.numel() for p in model.parameters()) / 1e6
    graph, params = _graph_path(name, runtime, work), None
    if not graph.is_file():
        model, exportable = build(name, args.device)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        export_graphs(name, exportable, work, args.device)
    if runtime.startswith("tensorrt"):
        from vfmkit.export.tensorrt import TensorRTEngine

        engine = TensorRTEngine(graph)
        return (lambda images: engine(images)), params
    from vfmkit.export.runtime import OnnxModel

    session = OnnxModel(graph, threads=args.threads)
    return (lambda images: session(images.numpy())), params


def measure(names: list[str], args, work: Path) -> list[dict]:
    """Time every model of ``names`` under every runtime and batch, alternating the models round by round."""
    rows, eager_params = [], {}
    for runtime in RUNTIMES[args.device]:
        active = [n for n in names if runtime.startswith("eager") or n not in EAGER_ONLY]
        runs = {name: runner(name, runtime, args, work) for name in active}
        if runtime.startswith("eager"):
            eager_params = {name: run[1] for name, run in runs.items()}
        for batch in args.batches:
            images = {
                name: torch.rand(batch, 3, MODELS[name]["resolution"], MODELS[name]["resolution"], device=args.device)
                for name in active
            }
            on_device = runtime.startswith(("eager", "tensorrt"))  # onnxruntime runs on the CPU
            for name in active:  # warm-up
                runs[name][0](images[name] if on_device else images[name].cpu())
            times = {name: [] for name in active}
            for _ in range(args.rounds if batch == 1 else args.rounds8):
                for name in active:
                    x = images[name] if on_device else images[name].cpu()
                    start = time.perf_counter()
                    runs[name][0](x)
                    times[name].append(time.perf_counter() - start)
            for name in active:
                median, params = statistics.median(times[name]), runs[name][1] or eager_params.get(name)
                rows.append(
                    {
                        "name": name,
                        "runtime": runtime,
                        "batch": batch,
                        "img_s": batch / median,
                        "params_m": params,
                        "rounds": len(times[name]),
                    }  # fmt: skip
                )
        del runs
    return rows


def peak_memory(name: str, runtime: str, batch: int, args, work: Path) -> float:
    """Peak memory (MB) of a fresh process that builds / loads the row's model and runs one forward."""
    run, _ = runner(name, runtime, args, work)
    size = MODELS[name]["resolution"]
    on_device = runtime.startswith(("eager", "tensorrt"))
    images = torch.rand(batch, 3, size, size, device=args.device if on_device else "cpu")
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run(images)
    if args.device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def _child(args, *extra: str) -> object:
    """Run this script with ``extra`` in a fresh interpreter; its last JSON line, or ``{"error": ...}``."""
    command = [sys.executable, __file__, *sys.argv[1:], *extra]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(("{", "["))]
    if done.returncode or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    return json.loads(lines[-1])


def _rfdetr_missing() -> str | None:
    check = subprocess.run([sys.executable, "-c", "import rfdetr"], capture_output=True, text=True, check=False)
    if check.returncode == 0:
        return None
    return (check.stderr.strip().splitlines() or ["import failed"])[-1][:200]


def _report(rows: list[dict], args, loads: tuple[str, str]) -> None:
    print(
        f"torch {torch.__version__}, {args.device}, {args.threads} threads, batches {args.batches}, median of "
        f"{args.rounds} (batch 1) / {args.rounds8} (batch 8) rounds, random init, 80 classes; {os.cpu_count()} cores; "
        f"load average at the start {loads[0]}, at the end {loads[1]}"
    )
    print(
        "| model | runtime | batch | input | params (M) | img/s | vs RF-DETR, same runtime | vs RF-DETR eager "
        "| peak MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    found = {(r["name"], r["runtime"], r["batch"]): r for r in rows if "img_s" in r}
    partner = {a: b for a, b in PAIRS}
    for row in rows:
        if "error" in row:
            print(f"| (failed: {row['error']}) | | | | | | | | |")
            continue
        same = found.get((partner.get(row["name"]), row["runtime"], row["batch"]))
        eager = found.get((partner.get(row["name"]), RUNTIMES[args.device][0], row["batch"]))
        ratio = " | ".join(f"{row['img_s'] / o['img_s']:.2f}" if o else "-" for o in (same, eager))
        memory = f"{row['peak_mb']:.0f}" if isinstance(row.get("peak_mb"), float) else "-"
        size = MODELS[row["name"]]["resolution"]
        print(
            f"| {row['name']} | {row['runtime']} | {row['batch']} | {size} | {row['params_m'] or 0:.1f} | "
            f"{row['img_s']:.3f} | {ratio} | {memory} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds at batch 1")
    parser.add_argument("--rounds8", type=int, default=3, help="timed rounds at larger batches")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--groups", default="all", choices=["all", "pairs", "others"], help="pairs: vs RF-DETR; others: the rest"
    )
    parser.add_argument("--work", type=Path, help="folder for the exported graphs (default: a temporary one)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--memory", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    if args.measure or args.memory:
        work = Path(os.environ["VFM_DETECT_BENCH_WORK"])
        if args.measure:
            print(json.dumps(measure(args.measure.split(","), args, work)))
        else:
            name, runtime, batch = args.memory
            print(json.dumps({"peak_mb": peak_memory(name, runtime, int(batch), args, work)}))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="vfm-detect-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["VFM_DETECT_BENCH_WORK"] = str(work)
    missing = _rfdetr_missing()
    pairs = [[a] if missing else [a, b] for a, b in PAIRS] if args.groups != "others" else []
    groups = pairs + ([[n] for n in SINGLES] if args.groups != "pairs" else [])
    start_load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    rows: list[dict] = []
    for group in groups:
        found = _child(args, "--measure", ",".join(group))
        rows += found if isinstance(found, list) else [found]
    for row in rows:
        if "img_s" in row:
            memory = _child(args, "--memory", row["name"], row["runtime"], str(row["batch"]))
            row["peak_mb"] = memory.get("peak_mb") if isinstance(memory, dict) else None
    _report(rows, args, (start_load, " / ".join(f"{v:.1f}" for v in os.getloadavg())))
    if missing:
        print(f"\nRF-DETR skipped: `import rfdetr` failed ({missing}); see this script's docstring")


if __name__ == "__main__":
    main()
