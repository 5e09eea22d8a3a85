"""Weight sources: ``hf-hub:<org>/<repo>[@revision][/path/in/repo]`` through the Hugging Face cache, or local paths.

Offline-first: ``HF_HUB_OFFLINE=1`` is honoured; when a file is neither cached nor downloadable the error names the
repo, the file and the cache folder, and says how to fetch it. Before any network wait one line on stderr says what
is fetched from which endpoint, and a silent endpoint fails after ``HF_HUB_ETAG_TIMEOUT`` seconds (default 10).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from vfmkit.errors import ModelNotFoundError, WeightsError
from vfmkit.utils.text import error_reason

HUB_PREFIX = "hf-hub:"
DEFAULT_HUB_TIMEOUT_S = 10.0
"""Seconds to wait for the Hub to answer when ``HF_HUB_ETAG_TIMEOUT`` is not set."""


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


class HubUnreachableError(WeightsError):
    """The Hub endpoint did not answer in time or could not be reached (no network, a firewall that drops packets,
    a proxy that never replies); trying other files of the same repo is pointless."""


def hub_timeout() -> float:
    """Seconds to wait for the Hub to answer a request: ``HF_HUB_ETAG_TIMEOUT`` when set (to a positive number),
    else :data:`DEFAULT_HUB_TIMEOUT_S`."""
    raw = os.environ.get("HF_HUB_ETAG_TIMEOUT", "").strip()
    try:
        value = float(raw) if raw else DEFAULT_HUB_TIMEOUT_S
    except ValueError:
        return DEFAULT_HUB_TIMEOUT_S
    return value if value > 0 else DEFAULT_HUB_TIMEOUT_S


def fetch_hub_file(ref: HubRef, filename: str) -> Path:
    """Path of ``filename`` from the repo, from the local cache (or downloaded when online).

    A cached file is used without any network request. Otherwise one line on stderr says what is fetched from where,
    then one metadata request (no retries) waits at most :func:`hub_timeout` seconds for the endpoint to answer
    before the download starts; huggingface_hub alone would retry a silent endpoint for minutes.

    Raises:
        HubUnreachableError: the endpoint did not answer within the timeout, or cannot be reached.
        WeightsError: the file is not cached and cannot be downloaded (offline, no such repo/file, no access).
    """
    from huggingface_hub import constants, hf_hub_download

    try:  # offline first: a cached file is used without any network request
        return Path(hf_hub_download(ref.repo, filename, revision=ref.revision, local_files_only=True))
    except Exception:
        pass
    if constants.HF_HUB_OFFLINE:
        raise WeightsError(_not_fetched(ref, filename, "HF_HUB_OFFLINE is set, so nothing is downloaded"))
    endpoint, timeout = constants.ENDPOINT, hub_timeout()
    where = f"{filename} of {_repo_label(ref)} from {endpoint}"
    print(f"fetching {where} (timeout {timeout:g} s)", file=sys.stderr, flush=True)
    _check_hub_answers(ref, filename, endpoint, timeout)
    try:
        return Path(hf_hub_download(ref.repo, filename, revision=ref.revision, etag_timeout=timeout))
    except Exception as err:  # huggingface_hub raises many types (404, auth, connection, disk)
        raise WeightsError(_not_fetched(ref, filename, f"from {endpoint}: {_hub_reason(err)}")) from None


def _check_hub_answers(ref: HubRef, filename: str, endpoint: str, timeout: float) -> None:
    """One metadata request for the file, without retries, waiting at most ``timeout`` seconds.

    Raises:
        HubUnreachableError: no answer in time, or no connection; WeightsError: the Hub answered with an error.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    try:
        get_hf_file_metadata(hf_hub_url(ref.repo, filename, revision=ref.revision), timeout=timeout)
    except HfHubHTTPError as err:  # the Hub answered: 404 (no such repo or file), 401/403 (gated, private), 5xx
        raise WeightsError(_not_fetched(ref, filename, f"from {endpoint}: {_hub_reason(err)}")) from None
    except Exception as err:  # transport errors: timeout, refused connection, DNS, proxy
        timed_out = "timeout" in type(err).__name__.lower() or isinstance(err, TimeoutError)
        problem = f"did not answer within {timeout:g} s" if timed_out else "could not be reached"
        raise HubUnreachableError(
            f"{filename} of {_repo_label(ref)}: {endpoint} {problem} ({type(err).__name__}). Check the "
            "network or proxy, set HF_HUB_ETAG_TIMEOUT=<seconds> to wait longer, or set HF_HUB_OFFLINE=1 and pass a "
            "cached id or a local checkpoint."
        ) from None


def _repo_label(ref: HubRef) -> str:
    return f"{HUB_PREFIX}{ref.repo}{'@' + ref.revision if ref.revision else ''}"


def _hub_reason(err: BaseException) -> str:
    return f"{type(err).__name__}: {error_reason(err, 160)}" if str(err).strip() else type(err).__name__


def _not_fetched(ref: HubRef, filename: str, reason: str) -> str:
    return (
        f"{filename} of {_repo_label(ref)} is not in the Hugging Face cache ({hub_cache_dir()}) and could not be "
        f"downloaded ({reason}). On a machine with internet run `huggingface-cli download {ref.repo}`, then copy "
        "the cache, or pass a local file or folder."
    )


def hub_file_exists_in_cache(ref: HubRef, filename: str) -> bool:
    """Whether ``filename`` of the repo is in the local cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(ref.repo, filename, revision=ref.revision)
    return isinstance(found, str)


def local_path(source: str | Path) -> Path:
    """An existing local path, ``~`` expanded.

    Raises:
        ModelNotFoundError: it is empty (which would mean the current folder) or does not exist.
    """
    if not str(source).strip():
        raise ModelNotFoundError("empty path: expected a checkpoint file or folder")
    path = Path(source).expanduser()
    if not path.exists():
        raise ModelNotFoundError(f"no such file or folder: {path}")
    return path
