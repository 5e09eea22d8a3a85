"""Distillation steps per second with and without the teacher-output cache, same data, same student, same teacher.

    python benchmarks/distill.py [--teacher c-radio-v2-b] [--teacher-resolution 112] [--student test-radio-v2-tiny]
                                 [--resolution 64] [--images 16] [--epochs 3] [--batch-size 16] [--device cpu]

Both runs train the same student (random init) for the same epochs against one teacher (random init: speed does not
depend on the weights) in ``combo`` mode (summary + patch features, PHI-S estimated on the first batch only, so the
float64 eigendecompositions of the estimate, seconds each on a CPU for 2304-d summaries, stay out of the comparison).
Without the cache the teacher runs on every batch; with it, epoch 1 runs the teacher and writes every image's
outputs, later epochs read them from disk and never run the teacher. Steps/s are per epoch (data loading included,
``--workers`` DataLoader processes); CPU seconds per step (this process, all its threads) are printed too, as they
depend much less on how loaded a shared machine is.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.synthetic import make_shapes_dataset  # noqa: E402

from vfmkit.data.images import list_image_files  # noqa: E402
from vfmkit.tasks.distill.data import DistillImages, collate_distill  # noqa: E402
from vfmkit.tasks.distill.model import build_distill_model, student_resolution  # noqa: E402
from vfmkit.tasks.distill.spec import DistillSpec  # noqa: E402


def _spec(args: argparse.Namespace, root: Path, cache: bool) -> DistillSpec:
    teacher = {"backbone": args.teacher, "pretrained": False, "mode": "combo", "input_size": args.teacher_resolution}
    return DistillSpec.model_validate(
        {
            "model": {"backbone": args.student, "pretrained": False, "resolution": args.resolution},
            "distill": {
                "teacher": [teacher],
                "cache_teacher_outputs": cache,
                "cache_dir": str(root / "cache"),
                "phi_s": {"freeze_after": 1, "update_period": 1},  # one eigh on the first step, not per epoch
            },
            "dataset": {"train_nolabel": {"folder_path": str(root / "data")}},
        }
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(args: argparse.Namespace, root: Path, cache: bool) -> list[tuple[float, float]]:
    """(steps per second, CPU seconds of this process per step) of each epoch."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build_distill_model(_spec(args, root, cache)).to(device)
    files = list_image_files(root / "data")
    size = student_resolution(model.student, args.resolution)
    dataset = DistillImages(files, size, model.teacher_sizes(), cache=model.cache)
    loader = DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, collate_fn=collate_distill
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    rates = []
    for _ in range(args.epochs):
        _sync(device)
        start, cpu, steps = time.perf_counter(), time.process_time(), 0
        for batch in loader:
            batch["student"] = batch["student"].to(device, non_blocking=True)
            loss = model(batch)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
        _sync(device)
        rates.append((steps / (time.perf_counter() - start), (time.process_time() - cpu) / steps))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="c-radio-v2-b")
    parser.add_argument("--teacher-resolution", type=int, default=112)
    parser.add_argument("--student", default="test-radio-v2-tiny")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--images", type=int, default=16, help="images per class (4 classes)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_shapes_dataset(root / "data", {"train": args.images}, size=max(args.resolution, args.teacher_resolution))
        plain = run(args, root, cache=False)
        cached = run(args, root, cache=True)
        cache_bytes = sum(f.stat().st_size for f in (root / "cache").rglob("*.safetensors"))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {args.device}, threads {torch.get_num_threads()}, load average {load:.1f}; "
        f"teacher {args.teacher} at {args.teacher_resolution}px, student {args.student} at {args.resolution}px "
        f"(both random init), {4 * args.images} images, batch {args.batch_size}, combo mode, PHI-S"
    )
    print("| run | epoch 1 steps/s | later epochs steps/s | epoch 1 CPU s/step | later epochs CPU s/step |")
    print("|---|---|---|---|---|")

    def later(rates: list[tuple[float, float]], column: int) -> float:
        rest = rates[1:] or rates
        return sum(r[column] for r in rest) / len(rest)

    for name, rates in (("teacher every step", plain), ("teacher cache (epoch 1 fills it)", cached)):
        first = rates[0]
        print(f"| {name} | {first[0]:.2f} | {later(rates, 0):.2f} | {first[1]:.2f} | {later(rates, 1):.2f} |")
    speedup = later(cached, 0) / later(plain, 0)
    cpu_ratio = later(plain, 1) / later(cached, 1)
    print(
        f"\nlater epochs: {speedup:.1f}x the steps/s, {cpu_ratio:.1f}x less CPU per step with the cache "
        f"({cache_bytes / 1e6:.1f} MB on disk)"
    )


if __name__ == "__main__":
    main()
