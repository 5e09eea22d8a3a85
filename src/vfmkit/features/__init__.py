"""Feature extraction that trains nothing: embeddings (one file or a folder of shards), vector indexes, search,
near-duplicates, PCA pictures, k-NN probes and the demo.

``open_embeddings`` (:func:`vfmkit.features.reader.open_embeddings`) is importable from here; it is loaded on first
use so that importing a submodule stays cheap.
"""

__all__ = ["open_embeddings"]


def __getattr__(name: str):
    if name == "open_embeddings":
        from vfmkit.features.reader import open_embeddings

        return open_embeddings
    raise AttributeError(f"module 'vfmkit.features' has no attribute {name!r}")
