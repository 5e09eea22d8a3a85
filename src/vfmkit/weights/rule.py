"""The one rule for where a backbone's weights come from.

Every backbone vfmkit builds from a name has exactly one weights source, decided here from plain arguments (the
name or path, ``pretrained``, an optional checkpoint file) before anything is loaded:

======================  ===============================================  ============================================
kind                    when                                             ``source``
======================  ===============================================  ============================================
``published``           a registry model with ``pretrained`` true        where its weights are published (hub id)
``checkpoint file``     a registry model with a checkpoint file          the file, absolute
``local backbone``      the name is an existing file or folder           the path, absolute
``adapted backbone``    the name is an adapted-backbone folder           the folder, absolute
``hub source``          the name is ``hf-hub:<org>/<repo>...``           the hub id
``test variant``        a tiny random test model of the registry         ``test variant, seed 0``
``random init``         a registry model with ``pretrained`` false       ``random init``
======================  ===============================================  ============================================

A checkpoint file means it is loaded. A request that contradicts itself is refused with one line naming both keys,
never resolved silently: a checkpoint file with ``pretrained`` false, a checkpoint file for a test variant, a
checkpoint file beside a backbone that names its own weights (a path, a folder, a hub id), and ``pretrained`` false
for a backbone that names its own weights (the file would be loaded anyway).

The key names (``model.backbone_checkpoint`` ...) are plain strings used only in messages: callers pass the spec
keys that set each value, :func:`vfmkit.models.factory.load_backbone` passes its argument names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vfmkit.errors import ConfigurationError, ModelNotFoundError

PUBLISHED = "published"
CHECKPOINT_FILE = "checkpoint file"
LOCAL_BACKBONE = "local backbone"
ADAPTED_BACKBONE = "adapted backbone"
HUB_SOURCE = "hub source"
TEST_VARIANT = "test variant"
RANDOM_INIT = "random init"
SOURCE_KINDS = (PUBLISHED, CHECKPOINT_FILE, LOCAL_BACKBONE, ADAPTED_BACKBONE, HUB_SOURCE, TEST_VARIANT, RANDOM_INIT)
"""Every kind of weights source, in the order of the table above."""

TEST_VARIANT_SOURCE = "test variant, seed 0"
RANDOM_INIT_SOURCE = "random init"
HUB_PREFIX = "hf-hub:"
TIMM_PREFIX = "timm:"
_NAMED_BY_ITSELF = {
    LOCAL_BACKBONE: "a local checkpoint",
    ADAPTED_BACKBONE: "an adapted backbone",
    HUB_SOURCE: "a hub source",
}


@dataclass(frozen=True)
class RegisteredModel:
    """What a registry knows about a name.

    Attributes:
        id: the canonical registry id.
        test_only: a tiny random-init test variant (it has no weights to load).
        published: where its weights are published (``hf-hub:...``), None when nowhere downloadable.
    """

    id: str
    test_only: bool
    published: str | None


@dataclass(frozen=True)
class WeightsRequest:
    """One backbone someone asks for, with the keys that set each value.

    Attributes:
        role: what the backbone is for (``backbone``, ``frozen_fm``, ``teacher:<name>``, ``text tower`` ...).
        model: the registry id / alias, ``hf-hub:`` source, ``timm:<architecture>``, or a local file or folder.
        pretrained: load the published weights (registry models; False: random init).
        checkpoint: a local weights file (or RADIO checkpoint folder) to load instead of the published source.
        model_key, pretrained_key, checkpoint_key: the keys that set ``model``, ``pretrained`` and ``checkpoint``
            (for messages only); ``model_key`` None: the caller's own argument (``name_or_path``), and an unknown
            name's error is the registry's own.
        module_path: the dotted path of the built backbone inside the task's model (what is fingerprinted).
        registered: the registry facts of ``model`` when it names an entry of another registry than the backbone
            registry (CLIP models, text towers); None: ``model`` is looked up as a backbone name.
    """

    role: str
    model: str
    pretrained: bool
    checkpoint: str | Path | None = None
    model_key: str | None = None
    pretrained_key: str = "pretrained"
    checkpoint_key: str = "checkpoint"
    module_path: str | None = None
    registered: RegisteredModel | None = None


@dataclass(frozen=True)
class WeightsDecision:
    """Where a request's weights come from.

    Attributes:
        request: what was asked for.
        kind: one of :data:`SOURCE_KINDS`.
        source: the hub id, the absolute path, :data:`RANDOM_INIT_SOURCE` or :data:`TEST_VARIANT_SOURCE`.
        path: the local file or folder that is read (absolute), None when nothing local is read.
    """

    request: WeightsRequest
    kind: str
    source: str
    path: Path | None = None


def decide_source(request: WeightsRequest) -> WeightsDecision:
    """The weights source of ``request`` (see the module docstring); nothing is loaded.

    Raises:
        ConfigurationError: the request contradicts itself (naming both keys).
        ModelNotFoundError: ``model`` or the checkpoint is empty, the checkpoint does not exist (naming the key), or
            ``model`` is neither a path, a hub source nor a registry name.
    """
    name = str(request.model)
    if not name.strip():
        raise ModelNotFoundError(f"{_model_key(request)} is empty: expected a registry id or alias, or a path")
    checkpoint = _existing_checkpoint(request)
    registered = request.registered
    if registered is None:
        own = _own_weights(name)
        if own is not None:
            return _named_by_itself(request, checkpoint, *own)
        try:
            registered = registered_backbone(name)
        except ModelNotFoundError as err:
            if request.model_key is None:
                raise
            raise ModelNotFoundError(f"{request.model_key}: {err}") from None
    if registered.test_only:
        if checkpoint is not None:
            _refuse_unloaded_file(request, checkpoint)
            raise ConfigurationError(
                f"{request.checkpoint_key} is set ({checkpoint}) but {_model_key(request)} {name} is a test variant "
                f"(random weights, seed 0) that loads no file: remove {request.checkpoint_key}, or set "
                f"{_model_key(request)} to the registry model the file holds"
            )
        return WeightsDecision(request, TEST_VARIANT, TEST_VARIANT_SOURCE)
    if checkpoint is not None:
        _refuse_unloaded_file(request, checkpoint)
        return WeightsDecision(request, CHECKPOINT_FILE, str(checkpoint), checkpoint)
    if request.pretrained:
        return WeightsDecision(request, PUBLISHED, registered.published or f"{registered.id} (no published weights)")
    return WeightsDecision(request, RANDOM_INIT, RANDOM_INIT_SOURCE)


def registered_backbone(name: str) -> RegisteredModel:
    """The registry facts of a backbone name: a registry id / alias, or ``timm:<architecture>`` (a timm CNN with
    timm's published ImageNet weights).

    Raises:
        ModelNotFoundError: an unknown name (the registry's message, with suggestions).
    """
    if name.startswith(TIMM_PREFIX):
        return RegisteredModel(name, False, _timm_published(name[len(TIMM_PREFIX) :]))
    from vfmkit.models.registry import resolve_entry

    entry = resolve_entry(name)
    return RegisteredModel(entry.id, entry.test_only, entry.source)


def names_its_own_weights(model: str | Path) -> bool:
    """True when ``model`` is a hub source or an existing local file or folder: its weights (and architecture) are
    read from it whatever ``pretrained`` says."""
    name = str(model)
    return name.startswith(HUB_PREFIX) or (bool(name.strip()) and Path(name).expanduser().exists())


def loader_arguments(
    model: str | Path, pretrained: bool, checkpoint: str | Path | None, load: bool
) -> tuple[bool, str | Path | None]:
    """``(pretrained, checkpoint)`` to build ``model`` with.

    Args:
        model, pretrained, checkpoint: what the spec asks for.
        load: True loads the weights as asked; False loads none (a task checkpoint holding every weight follows,
            or a dry build on the meta device): no checkpoint, and published weights only for a backbone that names
            its own file (its architecture is read from it).
    """
    if load:
        return pretrained, checkpoint
    return names_its_own_weights(model), None


def _existing_checkpoint(request: WeightsRequest) -> Path | None:
    """The request's checkpoint, resolved; None when there is none.

    Raises:
        ModelNotFoundError: an empty value, or no such file or folder.
    """
    if request.checkpoint is None:
        return None
    if not str(request.checkpoint).strip():
        raise ModelNotFoundError(f"{request.checkpoint_key} is empty: expected a local weights file")
    path = Path(request.checkpoint).expanduser()
    if not path.exists():
        raise ModelNotFoundError(f"{request.checkpoint_key}: no such file or folder: {path}")
    return path.resolve()


def _refuse_unloaded_file(request: WeightsRequest, checkpoint: Path) -> None:
    """A checkpoint file with ``pretrained`` false would be ignored: refuse it."""
    if not request.pretrained:
        raise ConfigurationError(
            f"{request.checkpoint_key} is set ({checkpoint}) but {request.pretrained_key} is false: set "
            f"{request.pretrained_key}=true to load the file, or remove {request.checkpoint_key}"
        )


def _own_weights(name: str) -> tuple[str, str, Path | None] | None:
    """(kind, source, path) of a name that is its own weights source (hub id, adapted folder, local path)."""
    if name.startswith(HUB_PREFIX):
        return HUB_SOURCE, name, None
    path = Path(name).expanduser()
    if not path.exists():
        return None
    from vfmkit.models.backbones.adapted import is_adapted_backbone_folder

    kind = ADAPTED_BACKBONE if is_adapted_backbone_folder(path) else LOCAL_BACKBONE
    return kind, str(path.resolve()), path.resolve()


def _named_by_itself(
    request: WeightsRequest, checkpoint: Path | None, kind: str, source: str, path: Path | None
) -> WeightsDecision:
    what, key = f"{_NAMED_BY_ITSELF[kind]} ({source})", _model_key(request)
    if checkpoint is not None:
        raise ConfigurationError(
            f"{request.checkpoint_key} is set ({checkpoint}) but {key} is {what} whose own weights are loaded: "
            f"remove {request.checkpoint_key}, or set {key} to the registry model the file is for"
        )
    if not request.pretrained:
        raise ConfigurationError(
            f"{key} is {what}, whose weights are always loaded, but {request.pretrained_key} is false: set "
            f"{request.pretrained_key}=true to load them, or set {key} to a registry model for a random init"
        )
    return WeightsDecision(request, kind, source, path)


def _model_key(request: WeightsRequest) -> str:
    return request.model_key or "name_or_path"


def _timm_published(architecture: str) -> str | None:
    """timm's published weights of an architecture (``hf-hub:<repo>``), None when it has none or is unknown."""
    try:
        import timm

        config = timm.models.get_pretrained_cfg(architecture)
    except Exception:  # an unknown architecture: the builder names it
        return None
    hub_id = getattr(config, "hf_hub_id", None)
    return f"{HUB_PREFIX}{hub_id}" if hub_id else None
