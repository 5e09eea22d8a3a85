"""Linear probe with cached backbone features vs recomputing them every epoch, same data, same head, same epochs.

    python benchmarks/linear_probe.py [--backbone c-radio-v2-b] [--resolution 112] [--images 32] [--epochs 10]

The cached run includes its one-off feature extraction. Both runs train the same linear head (frozen, random-init
backbone: speed does not depend on the weights) for the same number of epochs and print wall-clock seconds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.synthetic import make_shapes_dataset  # noqa: E402

from vfmkit.data.sampling import EpochSeededSampler  # noqa: E402
from vfmkit.tasks.classify.data import ClassificationDataset, FeatureDataset  # noqa: E402
from vfmkit.tasks.classify.features import cached_summaries  # noqa: E402
from vfmkit.tasks.classify.hooks import TASK  # noqa: E402
from vfmkit.tasks.classify.module import ClassifyModule  # noqa: E402
from vfmkit.tasks.classify.preflight import preflight  # noqa: E402
from vfmkit.tasks.classify.spec import ClassifySpec  # noqa: E402


def _fit(module: ClassifyModule, train: DataLoader, val: DataLoader, epochs: int) -> float:
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(module, train, val)
    return time.perf_counter() - start


def run(args: argparse.Namespace, root: Path) -> dict[str, float]:
    make_shapes_dataset(root / "data", {"train": args.images, "val": args.images // 2}, size=args.resolution)
    spec = ClassifySpec.model_validate(
        {
            "dataset": {"root": str(root / "data")},
            "results_dir": str(root / "runs"),
            "model": {"backbone": args.backbone, "pretrained": False, "resolution": args.resolution},
            "train": {"epochs": args.epochs, "batch_size": args.batch_size, "num_workers": 0},
        }
    )
    report = preflight(spec.dataset)
    train, val = report.split("train"), report.split("val")
    pl.seed_everything(0, verbose=False)
    meta = {"classes": report.classes}
    classifier = TASK.build_model(spec, meta, pretrained=False)  # linear_probe: frozen backbone
    batch, res = args.batch_size, args.resolution

    start = time.perf_counter()
    features = [cached_summaries(classifier.backbone, s, res, root / "cache", batch)[0] for s in (train, val)]
    extraction = time.perf_counter() - start
    cached_module = ClassifyModule(classifier, spec, meta, TASK)
    cached_fit = _fit(
        cached_module,
        DataLoader(FeatureDataset(features[0], train.labels), batch, sampler=EpochSeededSampler(len(train), 0)),
        DataLoader(FeatureDataset(features[1], val.labels), batch),
        args.epochs,
    )
    recompute_module = ClassifyModule(classifier, spec, meta, TASK)
    recompute_module.on_features = False  # the same frozen head, recomputing the backbone every epoch
    recompute = _fit(
        recompute_module,
        DataLoader(ClassificationDataset(train, res), batch, sampler=EpochSeededSampler(len(train), 0)),
        DataLoader(ClassificationDataset(val, res), batch),
        args.epochs,
    )
    return {
        "extraction": extraction,
        "cached_fit": cached_fit,
        "cached": extraction + cached_fit,
        "recompute": recompute,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="c-radio-v2-b")
    parser.add_argument("--resolution", type=int, default=112)
    parser.add_argument("--images", type=int, default=32, help="training images per class (4 classes)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        times = run(args, Path(tmp))
    n = args.images * 4
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}; {args.backbone} (random init) at "
        f"{args.resolution}px, {n} train + {n // 2} val images, {args.epochs} epochs"
    )
    print("| run | seconds |")
    print("|---|---|")
    print(f"| cached: feature extraction (once) | {times['extraction']:.1f} |")
    print(f"| cached: {args.epochs} epochs on features | {times['cached_fit']:.1f} |")
    print(f"| cached total | {times['cached']:.1f} |")
    print(f"| recompute the backbone every epoch | {times['recompute']:.1f} |")
    print(f"\nspeed-up: {times['recompute'] / times['cached']:.1f}x")


if __name__ == "__main__":
    main()
