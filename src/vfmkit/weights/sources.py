"""Weight sources: ``hf-hub:<org>/<repo>[@revision][/path/in/repo]`` through the Hugging Face cache, or local paths.

Offline-first: ``HF_HUB_OFFLINE=1`` is honoured by huggingface_hub; when a file is neither cached nor downloadable
the error names the repo, the file and the cache folder, and says how to fetch it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vfmkit.errors import ModelNotFoundError, WeightsError

HUB_PREFIX = "hf-hub:"


@dataclass(frozen=True)
class HubRef:
    """A Hugging Face Hub location: repo id, optional revision, optional file inside the repo."""

    repo: str
    revision: str | None = None
    filename: str | None = None

    def __str__(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        path = f"/{self.filename}" if self.filename else ""
        return f"{HUB_PREFIX}{self.repo}{rev}{path}"


def parse_hub(source: str) -> HubRef:
    """Parse ``hf-hub:org/repo[@rev][/file]``.

    Raises:
        ModelNotFoundError: not of that form.
    """
    if not source.startswith(HUB_PREFIX):
        raise ModelNotFoundError(f"{source!r} is not an hf-hub: source")
    parts = source[len(HUB_PREFIX) :].strip("/").split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise ModelNotFoundError(f"{source!r}: expected hf-hub:<org>/<repo>[@revision][/file]")
    org, name = parts[0], parts[1]
    revision = None
    if "@" in name:
        name, revision = name.split("@", 1)
    filename = "/".join(parts[2:]) or None
    return HubRef(repo=f"{org}/{name}", revision=revision, filename=filename)


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def fetch_hub_file(ref: HubRef, filename: str) -> Path:
    """Path of ``filename`` from the repo, from the local cache (or downloaded when online).

    Raises:
        WeightsError: the file is not cached and cannot be downloaded (offline, no such repo/file, no network).
    """
    from huggingface_hub import hf_hub_download

    try:  # offline first: a cached file is used without any network request
        return Path(hf_hub_download(ref.repo, filename, revision=ref.revision, local_files_only=True))
    except Exception:
        pass
    try:
        return Path(hf_hub_download(ref.repo, filename, revision=ref.revision))
    except Exception as err:  # huggingface_hub raises many types (offline, 404, connection, auth)
        reason = type(err).__name__
        raise WeightsError(
            f"{filename} of hf-hub:{ref.repo}{'@' + ref.revision if ref.revision else ''} is not in the Hugging Face "
            f"cache ({hub_cache_dir()}) and could not be downloaded ({reason}). On a machine with internet run "
            f"`huggingface-cli download {ref.repo}`, then copy the cache, or pass a local file or folder."
        ) from None


def hub_file_exists_in_cache(ref: HubRef, filename: str) -> bool:
    """Whether ``filename`` of the repo is in the local cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(ref.repo, filename, revision=ref.revision)
    return isinstance(found, str)


def local_path(source: str | Path) -> Path:
    """An existing local path, ``~`` expanded.

    Raises:
        ModelNotFoundError: it does not exist.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise ModelNotFoundError(f"no such file or folder: {path}")
    return path
