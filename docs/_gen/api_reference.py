"""The Python API page: mkdocstrings directives for the public API (rendered from the docstrings by mkdocstrings).

The names come from ``vfmkit.__all__`` (so a new public export appears by itself) plus the modules below, which the
guides' Python examples use.
"""

from __future__ import annotations

import vfmkit

GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "Backbones",
        "Load a backbone by registry id, alias, hub id or file, and run it on preprocessed images.",
        (
            "vfmkit.load_backbone", "vfmkit.list_backbones", "vfmkit.resolve_entry", "vfmkit.ModelEntry",
            "vfmkit.Backbone", "vfmkit.BackboneOutput", "vfmkit.AdaptorOutput", "vfmkit.Preprocessing",
        ),
    ),
    (
        "Images",
        "Find, read and preprocess images the way every command does.",
        (
            "vfmkit.list_image_files", "vfmkit.load_image_rgb", "vfmkit.preprocess_images",
            "vfmkit.preprocess_image_groups",
        ),
    ),
    (
        "Tasks",
        "The verbs of `vfm <task> <action>` from Python, and what they return.",
        (
            "vfmkit.task.Task", "vfmkit.engine.taskdef.TrainResult", "vfmkit.engine.taskdef.EvalResult",
            "vfmkit.engine.taskdef.PredictResult", "vfmkit.engine.taskdef.ExportResult",
        ),
    ),
    (
        "Features",
        "`vfm embed`, `vfm index build`, `vfm search`, `vfm dedup`, `vfm pca`, `vfm knn` and `vfm demo` as "
        "functions, and embeddings read back.",
        (
            "vfmkit.features.embed.embed_source", "vfmkit.features.embed.EmbedResult",
            "vfmkit.features.sharded.embed_to_folder", "vfmkit.features.sharded.ShardedEmbedResult",
            "vfmkit.features.reader.open_embeddings", "vfmkit.features.reader.EmbeddingsView",
            "vfmkit.features.index.build_index", "vfmkit.features.index.IndexBuild",
            "vfmkit.features.search.Collection", "vfmkit.features.dedup.find_duplicates",
            "vfmkit.features.pca.pca_source", "vfmkit.features.knn.knn_evaluate", "vfmkit.features.knn.KnnResult",
            "vfmkit.features.demo.run_demo", "vfmkit.features.runners.RuntimeOptions",
        ),
    ),
    (
        "Export",
        "Backbone export to ONNX / TensorRT (`vfm models export`).",
        ("vfmkit.export.model_export.export_model",),
    ),
    ("Errors", "What a user can fix: the CLI prints these as one `error:` line (exit code 2).", ("vfmkit.errors",)),
)  # fmt: skip


def public_names() -> list[str]:
    """The dotted paths of every name in ``vfmkit.__all__`` (lazy ones through their defining module)."""
    names = []
    for name in vfmkit.__all__:
        if name.startswith("__"):
            continue
        if name in vars(vfmkit):
            names.append(f"vfmkit.{name}")
        else:  # provided by vfmkit.__getattr__ on first use (vfmkit.Task)
            value = getattr(vfmkit, name)
            names.append(f"{value.__module__}.{value.__qualname__}")
    return names


def api_page() -> str:
    """The API page (``reference/api.md``): one section per group, one mkdocstrings block per object; names of
    ``vfmkit.__all__`` missing from the groups get a section of their own."""
    lines = [
        "# Python API",
        "",
        "The public API, generated from the docstrings. The same verbs as the command line: "
        "`vfmkit.Task(task, spec, overrides).train()` runs what `vfm <task> train -c spec key=value` runs.",
    ]
    listed = {path for _, _, paths in GROUPS for path in paths}
    rest = [path for path in public_names() if path not in listed]
    groups = [*GROUPS, ("More", "Other public names of `vfmkit`.", tuple(rest))] if rest else GROUPS
    for title, intro, paths in groups:
        lines += ["", f"## {title}", "", intro]
        for path in paths:
            lines += ["", f"::: {path}", "    options:", "      heading_level: 3"]
    return "\n".join(lines) + "\n"
