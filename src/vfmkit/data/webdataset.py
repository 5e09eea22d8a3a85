"""WebDataset ``.tar`` shards: image members read in place, and what a damaged shard leaves out.

A WebDataset shard is an uncompressed tar whose members ``<key>.<ext>`` share a key (their folder and their basename
up to its first dot, :func:`split_member`) per sample. Image members (``jpg``, ``jpeg``, ``png``, ``webp``) are
referenced by :class:`ImageRef` (the shard, the member name, the byte offset and size of its data) and decoded
straight from the shard, through the same RGB conversion as image files (:func:`vfmkit.data.images.to_rgb`).

A recorded image reference is a string: the file path, or ``<shard>.tar/<member>`` for a shard member
(:func:`parse_image_ref` reads it back).
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from PIL import Image

from vfmkit.data.images import load_image_rgb, to_rgb
from vfmkit.errors import UnreadableFileError

WDS_IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp")
"""Member extensions (after the key's first dot, lower case) read as images."""


@dataclass(frozen=True)
class ImageRef:
    """An image file, or a member of a WebDataset shard (``path`` is the ``.tar``; bytes at ``offset``)."""

    path: Path
    member: str | None = None
    offset: int = 0
    size: int = 0

    def __str__(self) -> str:
        return f"{self.path}/{self.member}" if self.member else str(self.path)

    def load(self) -> Image.Image:
        """The decoded 8-bit RGB image.

        Raises:
            UnreadableFileError: missing or undecodable (the message names the file or shard member).
        """
        if self.member is None:
            return load_image_rgb(self.path)
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read(self.size)
            if len(data) != self.size:
                raise UnreadableFileError(f"cannot read image {self}: the shard ends inside this member")
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                return to_rgb(image)
        except (OSError, SyntaxError, ValueError, TypeError, Image.DecompressionBombError) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            raise UnreadableFileError(f"cannot read image {self}: {reason}") from None


@dataclass
class ShardImages:
    """The image members of one shard, in tar order, and the problems met while listing it.

    Attributes:
        images: references to the complete image members.
        problems: ``(reference string, reason)`` for members cut off by the end of the file, or for the shard
            itself when its listing stopped early (a truncated or corrupt tar).
    """

    images: list[ImageRef] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


def split_member(member_name: str) -> tuple[str, str]:
    """(sample key, extension) of a member, as WebDataset splits them: the key is the member's folder plus its
    basename up to the first dot, the extension the rest, lower case (``a/b/00012.seg.png`` -> ``("a/b/00012",
    "seg.png")``, ``./00000.png`` -> ``("./00000", "png")``): members of one sample share their folder."""
    folder, _, name = member_name.rpartition("/")
    stem, _, ext = name.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def member_extension(member_name: str) -> str:
    """The extension of a member: after the basename's first dot, lower case (``x.seg.PNG`` -> ``seg.png``)."""
    base = member_name.rsplit("/", 1)[-1]
    return base.split(".", 1)[1].lower() if "." in base else ""


def list_shard_images(shard: str | Path) -> ShardImages:
    """List the image members of a WebDataset shard without reading their data.

    A member whose data runs past the end of the file is listed in ``problems`` (not in ``images``); a shard whose
    headers stop making sense (truncated inside a header, not a tar at all) keeps the members listed before that
    point and records the shard itself in ``problems``. Nothing here raises for a damaged shard.
    """
    shard = Path(shard)
    found = ShardImages()
    try:
        file_size = shard.stat().st_size
        with tarfile.open(shard, "r:") as tar:
            while True:
                member = tar.next()
                if member is None:
                    break
                if member.isfile() and member_extension(member.name) in WDS_IMAGE_SUFFIXES:
                    ref = ImageRef(shard, member.name, member.offset_data, member.size)
                    if member.offset_data + member.size > file_size:  # the file ends here: nothing follows
                        found.problems.append((str(ref), f"cannot read image {ref}: the shard ends inside this member"))
                        break
                    found.images.append(ref)
    except (OSError, tarfile.TarError, EOFError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        listed = f" after {len(found.images)} image member(s)" if found.images else ""
        found.problems.append((str(shard), f"cannot read shard {shard}{listed}: {reason} (truncated or not a tar)"))
    return found


def parse_image_ref(text: str) -> ImageRef:
    """The :class:`ImageRef` a recorded string names: ``<shard>.tar/<member>`` or a file path.

    The member's offset and size come from the shard's headers, listed once per shard and kept (for the shard's
    current size and modification time) for later look-ups. Raises :class:`UnreadableFileError` when the shard or
    the member cannot be found.
    """
    marker = text.rfind(".tar/")
    if marker < 0:
        return ImageRef(Path(text))
    shard, member = Path(text[: marker + 4]), text[marker + 5 :]
    try:
        stat = shard.stat()
        offset, size = _member_table(shard, stat.st_size, stat.st_mtime_ns)[member]
    except (OSError, tarfile.TarError, EOFError) as err:
        raise UnreadableFileError(f"cannot read image {text}: {' '.join(str(err).split())}") from None
    except KeyError:
        raise UnreadableFileError(f"cannot read image {text}: no member {member!r} in {shard}") from None
    return ImageRef(shard, member, offset, size)


@lru_cache(maxsize=64)
def _member_table(shard: Path, size: int, mtime_ns: int) -> dict[str, tuple[int, int]]:
    """member name -> (data offset, size) of every file member of a shard (``size``/``mtime_ns`` key the cache)."""
    with tarfile.open(shard, "r:") as tar:
        return {m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()}
