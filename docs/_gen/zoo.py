"""The model zoo page: the backbone registry and the CLIP registry, as ``vfm models`` and ``vfm clip models`` list
them."""

from __future__ import annotations

from .markdown import code, table, text


def _params(params_m: float | None) -> str:
    if params_m is None:
        return "-"
    return f"{params_m:.0f}M" if params_m >= 10 else f"{params_m:.1f}M"


def backbone_rows(include_test: bool) -> list[list[str]]:
    """One row per backbone entry: id, description, family, params, resolution, patch, license, weights, aliases."""
    from vfmkit.cli.main import weights_source
    from vfmkit.models.registry import list_backbones

    rows = []
    for entry in list_backbones(include_test=include_test):
        if include_test and not entry.test_only:
            continue
        rows.append(
            [
                f"{code(entry.id)}{{ #{entry.id} }}",
                text(entry.description),
                entry.family,
                _params(entry.params_m),
                f"{entry.preferred_resolution} (max {entry.max_resolution})",
                str(entry.patch_size),
                f"{entry.summary_dim} / {entry.feature_dim}",
                text(entry.license),
                text(weights_source(entry)),
                ", ".join(code(alias) for alias in entry.aliases) or "-",
            ]
        )
    return rows


BACKBONE_HEADER = (
    "id", "description", "family", "params", "resolution", "patch", "summary / feature dim", "license", "weights",
    "aliases",
)  # fmt: skip


def clip_rows(include_test: bool) -> list[list[str]]:
    """One row per CLIP model, the columns of ``vfm clip models``."""
    from vfmkit.models.clip_zoo import clip_model_rows

    every = clip_model_rows(include_test=include_test)
    if include_test:
        published = {row[0] for row in clip_model_rows(include_test=False)}
        every = [row for row in every if row[0] not in published]
    return [[code(row[0]), *(text(cell) for cell in row[1:])] for row in every]


def zoo_page() -> str:
    """The model zoo page (``reference/models.md``)."""
    from vfmkit.models.clip_zoo import CLIP_TABLE_HEADER

    return "\n".join(
        [
            "# Model zoo",
            "",
            "Every backbone of the registry, generated from it (`vfm models` prints the same list, `vfm models show "
            "ID` one entry). A model is named by its id or any alias (TAO's names included) wherever vfmkit takes a "
            "model: `--model` of `vfm embed`, `model.backbone` of a spec, `load_backbone(...)`. Resolution is the "
            "preferred input side and the largest supported one, in pixels; params count the backbone only. Weights "
            "are looked up in the Hugging Face cache first and downloaded only when missing and the network is "
            "reachable ([FAQ](../faq.md#offline)).",
            "",
            "## Backbones",
            "",
            table(BACKBONE_HEADER, backbone_rows(False)),
            "",
            "## CLIP models",
            "",
            "Image-text models of the `clip` task and `vfm clip zeroshot` (`vfm clip models`); a CLIP id names an "
            "image tower, its text tower and the logit scale. See [the CLIP guide](../tasks/clip.md).",
            "",
            table(CLIP_TABLE_HEADER, clip_rows(False)),
            "",
            "## Test variants",
            "",
            "Tiny random-init models for tests, demos and trying a command in seconds (`vfm models --all`); their "
            "outputs carry no meaning.",
            "",
            table(BACKBONE_HEADER, backbone_rows(True)),
            "",
            table(CLIP_TABLE_HEADER, clip_rows(True)),
            "",
        ]
    )
