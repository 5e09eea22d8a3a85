"""Universal segmentation heads: Mask2Former (masked-attention mask transformer) and OneFormer (its task-conditioned
variant), on any vfmkit neck.

``UniversalSegmenter(neck, num_classes, UniversalHeadConfig(head="mask2former" | "oneformer", ...))`` maps images
(and, for OneFormer, task tokens from :func:`task_tokens`) to ``pred_logits`` (B, N, K + 1) and ``pred_masks``
(B, N, H/4, W/4); :class:`ExportableUniversalSegmenter` is the ONNX graph (``images`` [+ ``task_tokens``] ->
``pred_logits``, ``pred_masks``).
"""

from vfmkit.models.heads.mask2former.decoder import MultiScaleMaskedTransformerDecoder
from vfmkit.models.heads.mask2former.model import (
    HEADS,
    ExportableUniversalSegmenter,
    UniversalHeadConfig,
    UniversalSegmenter,
)
from vfmkit.models.heads.mask2former.oneformer import (
    TASKS,
    OneFormerDecoder,
    TextMapper,
    task_text,
    task_tokens,
    tokenize_texts,
)
from vfmkit.models.heads.mask2former.pixel_decoder import MSDeformAttnPixelDecoder
from vfmkit.models.heads.mask2former.position import PositionEmbeddingSine

__all__ = [
    "HEADS",
    "TASKS",
    "ExportableUniversalSegmenter",
    "MSDeformAttnPixelDecoder",
    "MultiScaleMaskedTransformerDecoder",
    "OneFormerDecoder",
    "PositionEmbeddingSine",
    "TextMapper",
    "UniversalHeadConfig",
    "UniversalSegmenter",
    "task_text",
    "task_tokens",
    "tokenize_texts",
]
