"""Feature-extraction throughput and memory: a ViT-B RADIO vs a plain timm ViT-B/16, decoding + preprocessing, the
runtimes (PyTorch eager vs onnxruntime fp32 vs onnxruntime int8), and the whole `vfm embed` path per runtime.

Prints markdown tables: ``models`` (images/s per resolution and batch size, peak memory, and the peak memory of one
2048x2048 RADIO forward, 16,384 tokens), ``runtimes`` (the ViT-B RADIO run by PyTorch eager fp32, onnxruntime fp32
and onnxruntime int8 interleaved: images/s, ratio to eager, max abs diff / summary cosine to eager) and ``pipeline``
(``vfm embed``'s path, decode + preprocess + model + write, on a folder of generated JPEGs, per runtime, with the
model's share of the wall time). With ``--device cuda`` the runtime rows are eager fp32, bf16, bf16 + torch.compile
and a TensorRT fp16 engine.

Throughput of the models is measured in ONE process with the forwards interleaved (RADIO, timm, timm+registers,
RADIO, ...), so clock drift and background load hit all of them alike; peak memory is measured in a fresh
subprocess per model (peak RSS above the loaded model on CPU, max allocated on GPU).

    python benchmarks/embed.py                       # fp32 CPU, 224/512 x batch 1/8/32, plus the 2048 forward
    python benchmarks/embed.py --tables runtimes pipeline --threads 2     # the runtime rows only
    python benchmarks/embed.py --device cuda --dtype bf16 --compile   # on a GPU machine
    python benchmarks/embed.py --device cuda --tables runtimes        # GPU: eager fp32 / bf16 / compile / TensorRT

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
TABLES = ("models", "runtimes", "pipeline")
RADIO_ID = "c-radio-v2-b"
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
    with torch.inference_mode(), _context(args):
        for model in models.values():
            model(images)  # warm-up (and compilation)
        return interleaved(models, images, args)


def interleaved(runs: dict, images: torch.Tensor, args: argparse.Namespace) -> dict[str, float]:
    """images/s of each callable on ``images``, called in turn for at least ``rounds`` rounds and ``min_seconds``."""
    spent = dict.fromkeys(runs, 0.0)
    rounds, start = 0, time.perf_counter()
    while rounds < args.rounds or time.perf_counter() - start < args.min_seconds:
        for name, run in runs.items():
            _sync(args.device)
            tic = time.perf_counter()
            run(images)
            _sync(args.device)
            spent[name] += time.perf_counter() - tic
        rounds += 1
    return {name: len(images) * rounds / seconds for name, seconds in spent.items()}


def _quiet(message: str) -> None:
    """Swallows the runners' one-line reports (the benchmark prints its own figures)."""


def photo_batch(backbone, resolution: int, batch: int) -> torch.Tensor:
    """(batch, 3, R, R) preprocessed photo-like JPEGs: the speed does not depend on them, the int8 cosine does."""
    from vfmkit.data.preprocess import preprocess_images

    with tempfile.TemporaryDirectory() as tmp:
        return preprocess_images(make_images(Path(tmp), count=batch), backbone, resolution=resolution)


def cpu_runtimes(resolution: int, batch: int, args: argparse.Namespace) -> dict:
    """PyTorch eager fp32 vs onnxruntime fp32 vs onnxruntime int8 (the runners ``vfm embed`` uses), interleaved.

    The exports come from (and go to) the cache in ``args.cache_dir``; exporting and the first-batch checks happen
    in the untimed warm-up.
    """
    from vfmkit.export.cache import OnnxCache
    from vfmkit.export.onnx_runner import OnnxBackboneRunner
    from vfmkit.export.verify import cosine_stats

    torch.manual_seed(0)
    backbone = build("radio")
    images = photo_batch(backbone, resolution, batch)
    cache = OnnxCache(args.cache_dir)
    runs = {"eager": backbone}
    for name, int8 in (("onnx", False), ("int8", True)):
        runs[name] = OnnxBackboneRunner(backbone, RADIO_ID, int8, cache=cache, threads=args.threads, report=_quiet)
    with torch.inference_mode():
        out = {name: run(images) for name, run in runs.items()}  # warm-up, export, first-batch check
        speed = interleaved(runs, images, args)
    diff = max(
        (out["onnx"].summary - out["eager"].summary).abs().max(),
        (out["onnx"].features - out["eager"].features).abs().max(),
    )
    cosine = cosine_stats(out["int8"].summary.numpy(), out["eager"].summary.numpy())
    return {"img_s": speed, "max_abs_diff": float(diff), "cos_min": cosine.min, "cos_mean": cosine.mean}


def gpu_runtimes(resolution: int, batch: int, args: argparse.Namespace) -> dict:
    """On a CUDA GPU: eager fp32 vs bf16 autocast vs bf16 + torch.compile vs a TensorRT fp16 engine, interleaved;
    cosine of each summary to eager fp32."""
    from vfmkit.export.backbone import export_backbone
    from vfmkit.export.tensorrt import TensorRTEngine, build_tensorrt_engine
    from vfmkit.export.verify import cosine_stats
    from vfmkit.features.runners import TorchRunner

    torch.manual_seed(0)
    backbone = build("radio")
    images = photo_batch(backbone, resolution, batch)
    folder = Path(args.cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    graph = export_backbone(backbone, folder / f"radio-{resolution}.onnx", resolution, model_id=RADIO_ID)
    engine_file = folder / f"radio-{resolution}-b{batch}-fp16.engine"
    build_tensorrt_engine(graph.path, engine_file, "fp16", opt_batch=batch, max_batch=batch)
    engine = TensorRTEngine(engine_file)
    runs = {
        "fp32": TorchRunner(backbone, "cuda"),
        "bf16": TorchRunner(backbone, "cuda", "bf16"),
        "compile": TorchRunner(backbone, "cuda", "bf16", compile=True),
        "trt": lambda x: engine(x)["summary"],
    }
    images = images.cuda()
    with torch.inference_mode():
        out = {name: run(images) for name, run in runs.items()}  # warm-up (and compilation)
        speed = interleaved(runs, images, args)
    summaries = {
        name: (o if isinstance(o, torch.Tensor) else o.summary).float().cpu().numpy() for name, o in out.items()
    }
    cosines = {name: cosine_stats(value, summaries["fp32"]).mean for name, value in summaries.items()}
    return {"img_s": speed, "cos_mean": cosines}


class TimedRunner:
    """Wraps a runner and adds up the seconds spent in it (the model's share of a pipeline)."""

    def __init__(self, runner) -> None:
        self.runner, self.seconds = runner, 0.0

    @property
    def preprocessing(self):
        return self.runner.preprocessing

    def __call__(self, images: torch.Tensor):
        tic = time.perf_counter()
        output = self.runner(images)
        self.seconds += time.perf_counter() - tic
        return output


def pipeline(resolution: int, args: argparse.Namespace) -> dict:
    """The whole ``vfm embed`` path (list, decode + preprocess in its DataLoader, model, write safetensors) on
    ``args.pipeline_images`` generated 640x480 JPEGs, per runtime, runs alternating; returns img/s and model share."""
    from vfmkit.data.images import list_image_files
    from vfmkit.features.embed import extract_embeddings, runtime_tag, save_embeddings
    from vfmkit.features.runners import RuntimeOptions, make_runner

    torch.manual_seed(0)
    backbone = build("radio")
    options = {
        "eager": RuntimeOptions(device="cpu"),
        "onnx": RuntimeOptions("onnxruntime", cache_dir=args.cache_dir),
        "int8": RuntimeOptions("onnxruntime", int8=True, cache_dir=args.cache_dir),
    }
    runners = {name: make_runner(backbone, RADIO_ID, option) for name, option in options.items()}
    for runner in runners.values():
        runner.report = _quiet
    wall, model = dict.fromkeys(runners, 0.0), dict.fromkeys(runners, 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        make_images(Path(tmp), count=args.pipeline_images)
        files = list_image_files(tmp)
        for runner in runners.values():
            extract_embeddings(runner, files[:32], resolution, progress=False)  # export, first-batch check, warm-up
        for round_index in range(args.rounds):
            order = list(runners) if round_index % 2 == 0 else list(runners)[::-1]
            for name in order:
                timed = TimedRunner(runners[name])
                tic = time.perf_counter()
                embeddings = extract_embeddings(timed, list_image_files(tmp), resolution, progress=False)
                save_embeddings(
                    embeddings,
                    Path(tmp) / "out" / f"{name}.safetensors",
                    RADIO_ID,
                    "summary",
                    runtime_tag(runners[name]),
                )
                wall[name] += time.perf_counter() - tic
                model[name] += timed.seconds
    count = len(files) * args.rounds
    return {name: {"img_s": count / wall[name], "model_share": model[name] / wall[name]} for name in runners}


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
    if kind == "runtimes":
        return (gpu_runtimes if args.device.startswith("cuda") else cpu_runtimes)(res, batch, args)
    if kind == "pipeline":
        return pipeline(res, args)
    if kind == "decode":
        return {"img_s": decode_throughput(res)}
    return peak_memory(kind, res, batch, args)


def spawn(kind: str, resolution: int, batch: int, args: argparse.Namespace) -> dict:
    """Run one measurement in a fresh Python process and return its JSON result."""
    cmd = [sys.executable, __file__, "--worker", kind, "--resolution", str(resolution), "--batch", str(batch)]
    cmd += ["--rounds", str(args.rounds), "--min-seconds", str(args.min_seconds), "--device", args.device]
    cmd += ["--dtype", args.dtype, "--threads", str(args.threads)] + (["--compile"] if args.compile else [])
    cmd += ["--cache-dir", str(args.cache_dir), "--pipeline-images", str(args.pipeline_images)]
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
    parser.add_argument("--tables", nargs="+", choices=TABLES, default=list(TABLES), help="which tables to print")
    parser.add_argument("--pipeline-images", type=int, default=256, help="JPEGs in the `vfm embed` pipeline run")
    parser.add_argument("--pipeline-resolution", type=int, default=224)
    parser.add_argument("--cache-dir", type=Path, help="ONNX cache of the runtime rows (default: a temporary folder)")
    parser.add_argument(
        "--worker", choices=["throughput", "decode", "runtimes", "pipeline", *MODELS], help=argparse.SUPPRESS
    )
    parser.add_argument("--resolution", type=int, default=224, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    return parser


def models_table(args: argparse.Namespace) -> None:
    """RADIO vs timm ViT-B throughput and memory, decoding, and the 2048 px forward."""
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


def runtimes_table(args: argparse.Namespace) -> None:
    """One row per resolution and batch: the runtimes interleaved in one process."""
    if args.device.startswith("cuda"):
        columns = "eager fp32 | bf16 | ratio | bf16 + compile | ratio | TensorRT fp16 | ratio"
        print(f"| res | batch | {columns} (img/s) | summary cosine to fp32 (bf16 / compile / TensorRT) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
    else:
        columns = "eager fp32 img/s | onnxruntime fp32 img/s | ratio | max abs diff | onnxruntime int8 img/s | ratio"
        print(f"| res | batch | {columns} | int8 summary cosine to eager min / mean |")
        print("|---|---|---|---|---|---|---|---|---|")
    for res in args.resolutions:
        for batch in args.batches:
            row = spawn("runtimes", res, batch, args)
            speed = row["img_s"]
            if args.device.startswith("cuda"):
                base, cos = speed["fp32"], row["cos_mean"]
                print(
                    f"| {res} | {batch} | {base:.1f} | {speed['bf16']:.1f} | {speed['bf16'] / base:.2f} "
                    f"| {speed['compile']:.1f} | {speed['compile'] / base:.2f} | {speed['trt']:.1f} "
                    f"| {speed['trt'] / base:.2f} | {cos['bf16']:.4f} / {cos['compile']:.4f} / {cos['trt']:.4f} |"
                )
                continue
            base = speed["eager"]
            print(
                f"| {res} | {batch} | {base:.2f} | {speed['onnx']:.2f} | {speed['onnx'] / base:.2f} "
                f"| {row['max_abs_diff']:.1e} | {speed['int8']:.2f} | {speed['int8'] / base:.2f} "
                f"| {row['cos_min']:.4f} / {row['cos_mean']:.4f} |"
            )


def pipeline_table(args: argparse.Namespace) -> None:
    """The whole `vfm embed` path per runtime (CPU)."""
    res = args.pipeline_resolution
    row = spawn("pipeline", res, 32, args)
    print(f"\n`vfm embed` path on {args.pipeline_images} JPEGs (640x480) at {res} px, batch 32, {args.rounds} rounds:")
    print("| runtime | img/s (decode + preprocess + model + write) | ratio to eager | model share of the time |")
    print("|---|---|---|---|")
    names = {"eager": "PyTorch eager fp32", "onnx": "onnxruntime fp32", "int8": "onnxruntime int8"}
    for key, label in names.items():
        figures = row[key]
        print(
            f"| {label} | {figures['img_s']:.2f} | {figures['img_s'] / row['eager']['img_s']:.2f} "
            f"| {100 * figures['model_share']:.0f}% |"
        )


def main() -> None:
    args = _parser().parse_args()
    if args.worker:
        print(json.dumps(_worker(args)))
        return
    print(f"torch {torch.__version__}, {args.device}, {args.dtype}, threads {args.threads}, compile {args.compile}")
    with tempfile.TemporaryDirectory() as tmp:
        args.cache_dir = args.cache_dir or Path(tmp)
        if "models" in args.tables:
            models_table(args)
        if "runtimes" in args.tables:
            runtimes_table(args)
        if "pipeline" in args.tables and not args.device.startswith("cuda"):
            pipeline_table(args)


if __name__ == "__main__":
    main()
