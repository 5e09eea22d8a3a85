"""The one decoding preflight of vfmkit: every task and verb decodes each sample's files once, before using them.

A *sample* is whatever one training or evaluation item reads: an image, an image and its mask, the A / B / label
files of a change pair, an image and its panoptic PNG. :func:`check_samples` runs an ``inspect`` function over every
sample (in threads, with a progress bar on a terminal). ``inspect`` decodes the sample's files fully and returns
what the task wants to know (its size, pixels per class ...). When it raises
:class:`~vfmkit.errors.UnreadableFileError` (a missing, truncated or undecodable file) or
:class:`~vfmkit.errors.ImageTooSmallError` (an image smaller than the task's transforms take), the sample is *left
out*: listed on the console, and recorded as a :class:`LeftOut` in every active :func:`recording_left_out` block.
Any other :class:`~vfmkit.errors.DataError` (a mask with unknown values, a size that contradicts an annotation) is
a problem with the dataset and is raised: it is never silently left out.

The engine opens a recording around each verb's data preparation and writes what was left out to the run folder
(``left_out.json``) and to every ``metrics.json`` (key ``left_out``), so a left-out file is never silent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
from tqdm import tqdm

from vfmkit.data.images import load_image_rgb
from vfmkit.errors import ImageTooSmallError, UnreadableFileError

Sample = TypeVar("Sample")
Value = TypeVar("Value")

MAX_LISTED = 20
"""Left-out files printed per check; the rest are counted (all of them are recorded)."""


@dataclass(frozen=True)
class LeftOut:
    """A sample left out of a split.

    Attributes:
        split: the split (``train``, ``val``, ``predict`` ...).
        path: the sample's file (its first file when it has several; the reason names the one that failed).
        kind: ``unreadable`` or ``too small``.
        reason: one line naming the file and what is wrong with it.
    """

    split: str
    path: str
    kind: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


_recordings: list[list[LeftOut]] = []
_lock = threading.Lock()


@contextmanager
def recording_left_out() -> Iterator[list[LeftOut]]:
    """Collect every :class:`LeftOut` that checks inside the block report (nested blocks each receive them).

    Yields:
        The list, filled as the block runs.
    """
    found: list[LeftOut] = []
    with _lock:
        _recordings.append(found)
    try:
        yield found
    finally:
        with _lock:
            _recordings.remove(found)


def record_left_out(items: Sequence[LeftOut]) -> None:
    """Add ``items`` to every active :func:`recording_left_out` block (readers that find an unusable file without
    :func:`check_samples`, e.g. while listing a tar shard, report through here)."""
    with _lock:
        for recording in _recordings:
            recording.extend(items)


@dataclass
class SampleCheck(Generic[Value]):
    """What :func:`check_samples` found.

    Attributes:
        values: per sample, what ``inspect`` returned, or None when the sample was left out.
        left_out: the samples left out, in sample order.
    """

    values: list[Value | None]
    left_out: list[LeftOut]
    _kept: list[bool]

    @property
    def keep(self) -> np.ndarray:
        """bool (N,): True for the samples that passed."""
        return np.array(self._kept, dtype=bool)

    @property
    def kept_values(self) -> list[Value]:
        """``values`` of the samples that passed, in order."""
        return [value for value, kept in zip(self.values, self._kept, strict=True) if kept]


def decoded_size(path: Path, min_side: int = 1) -> tuple[int, int]:
    """Decode an image fully and return its (W, H).

    Raises:
        UnreadableFileError: the file does not decode; ImageTooSmallError: a side is below ``min_side`` pixels.
    """
    width, height = load_image_rgb(path).size
    require_min_side(path, width, height, min_side)
    return width, height


def require_min_side(path: Path | str, width: int, height: int, min_side: int, why: str = "") -> None:
    """Refuse an image whose shorter side is below ``min_side`` pixels.

    Raises:
        ImageTooSmallError: naming the file, its size and what needs the minimum.
    """
    if min(width, height) < min_side:
        what = why or "the training transforms"
        raise ImageTooSmallError(
            f"image {path} is {width}x{height} px, smaller than the {min_side} px per side {what} need"
        )


def check_samples(
    samples: Sequence[Sample],
    split: str,
    inspect: Callable[[Sample], Value] | None = None,
    path_of: Callable[[Sample], Path | str] = str,
    workers: int = 8,
    what: str = "images",
    log: Callable[[str], None] | None = print,
) -> SampleCheck[Value]:
    """Decode every sample once, leave out (list and record) those that cannot be used.

    Args:
        samples: the split's samples, in order.
        split: the split's name (recorded with each left-out sample).
        inspect: decodes one sample and returns what the caller needs; raises
            :class:`~vfmkit.errors.UnreadableFileError` (or its subclass ``ImageTooSmallError``) for an unusable
            sample. Default: :func:`decoded_size` of a path sample.
        path_of: the file recorded for a sample (default ``str(sample)``).
        workers: decoding threads.
        what: what the progress bar counts.
        log: where the list of left-out samples is printed (None: nowhere; they are still recorded).

    Returns:
        The values and the left-out samples.

    Raises:
        DataError: ``inspect`` found a problem that is not an unusable file (raised as is).
    """
    inspect = inspect or decoded_size

    def run(sample: Sample) -> tuple[bool, Any]:
        try:
            return True, inspect(sample)
        except UnreadableFileError as err:
            return False, err

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(
            tqdm(pool.map(run, samples), total=len(samples), desc=f"checking {split} {what}", disable=None, leave=False)
        )
    left_out = [
        LeftOut(split, str(path_of(sample)), _kind(result), " ".join(str(result).split()))
        for sample, (ok, result) in zip(samples, results, strict=True)
        if not ok
    ]
    record_left_out(left_out)
    if log is not None and left_out:
        log(format_left_out(left_out, len(samples), what))
    values = [result if ok else None for ok, result in results]
    return SampleCheck(values, left_out, [ok for ok, _ in results])


def _kind(error: BaseException) -> str:
    return "too small" if isinstance(error, ImageTooSmallError) else "unreadable"


def format_left_out(left_out: Sequence[LeftOut], total: int | None = None, what: str = "images") -> str:
    """The printed list: a headline per split (``left out of train: 2 of 40 images``), then up to
    :data:`MAX_LISTED` reasons and a count of the rest."""
    splits = list(dict.fromkeys(item.split for item in left_out))
    of = f" of {total}" if total is not None and len(splits) == 1 else ""
    kinds = ", ".join(sorted({item.kind for item in left_out}))
    lines = [f"left out of {' + '.join(splits)}: {len(left_out)}{of} {what} ({kinds}; recorded with the results)"]
    lines += [f"  {item.reason}" for item in left_out[:MAX_LISTED]]
    if len(left_out) > MAX_LISTED:
        lines.append(f"  ... and {len(left_out) - MAX_LISTED} more")
    return "\n".join(lines)


def left_out_dicts(left_out: Sequence[LeftOut], split: str | None = None) -> list[dict[str, str]]:
    """The recorded form (JSON objects), optionally only those of ``split``; each sample once."""
    seen: set[tuple[str, str]] = set()
    out = []
    for item in left_out:
        if (split is None or item.split == split) and (item.split, item.path) not in seen:
            seen.add((item.split, item.path))
            out.append(item.as_dict())
    return out
