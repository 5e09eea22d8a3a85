"""The deformable DETR decoder: self-attention between queries, multi-scale deformable cross-attention to the
encoder memory around each query's reference box, FFN, and iterative box refinement (every layer predicts a
correction of its reference box in logit space; RT-DETR's "look forward twice" gradient path).

With a frozen foundation model, every layer gets one extra global "image query" (Frozen-DETR): the foundation
model's summary through that layer's Linear + LayerNorm, with the reference box (0.5, 0.5, 1, 1) (the whole image),
appended to the queries for that layer and removed after it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vfmkit.models.heads.detr.common import MLP, inverse_sigmoid, prior_bias
from vfmkit.models.necks.msdeform_attn import MSDeformAttn

WHOLE_IMAGE_BOX = (0.5, 0.5, 1.0, 1.0)


class DeformableDecoderLayer(nn.Module):
    """Post-norm self-attention, deformable cross-attention and FFN of one decoder layer."""

    def __init__(self, dim: int, nheads: int, dim_feedforward: int, dropout: float, n_levels: int, n_points: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, nheads, dropout=dropout, batch_first=True)
        self.cross_attn = MSDeformAttn(dim, n_levels, nheads, n_points)
        self.linear1, self.linear2 = nn.Linear(dim, dim_feedforward), nn.Linear(dim_feedforward, dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        reference: torch.Tensor,
        memory: torch.Tensor,
        shapes: Sequence[tuple[int, int]],
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One layer.

        Args:
            tgt: (B, N, D) query content.
            query_pos: (B, N, D) query positions (from the reference boxes).
            reference: (B, N, 4) reference boxes cxcywh in [0, 1].
            memory: (B, S, D) flattened encoder levels.
            shapes: per level (H_l, W_l).
            attn_mask: (N, N) bool, True = blocked, or None.

        Returns:
            (B, N, D).
        """
        q = k = tgt + query_pos
        attn = self.self_attn(q, k, tgt, attn_mask=attn_mask, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout(attn))
        ref = reference[:, :, None, :].expand(-1, -1, len(shapes), -1)
        tgt = self.norm2(tgt + self.dropout(self.cross_attn(tgt + query_pos, ref, memory, shapes)))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout(ffn))


class DeformableDecoder(nn.Module):
    """``dec_layers`` decoder layers with per-layer class and box heads.

    Args:
        hidden_dim: D.
        num_classes: C.
        nheads, dim_feedforward, dropout, n_levels, n_points, dec_layers: layer settings.
        image_query_dim: width of the frozen foundation model's summary (None: no image query).
    """

    def __init__(
        self,
        hidden_dim: int,
        num_classes: int,
        nheads: int,
        dim_feedforward: int,
        dropout: float,
        n_levels: int,
        n_points: int,
        dec_layers: int,
        image_query_dim: int | None = None,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            DeformableDecoderLayer(hidden_dim, nheads, dim_feedforward, dropout, n_levels, n_points)
            for _ in range(dec_layers)
        )
        self.query_pos_head = MLP(4, 2 * hidden_dim, hidden_dim, 2)
        self.score_heads = nn.ModuleList(nn.Linear(hidden_dim, num_classes) for _ in range(dec_layers))
        self.bbox_heads = nn.ModuleList(MLP(hidden_dim, hidden_dim, 4, 3) for _ in range(dec_layers))
        self.image_query_proj = (
            nn.ModuleList(
                nn.Sequential(nn.Linear(image_query_dim, hidden_dim), nn.LayerNorm(hidden_dim))
                for _ in range(dec_layers)
            )
            if image_query_dim
            else None
        )
        for head in self.score_heads:
            nn.init.constant_(head.bias, prior_bias())
        for head in self.bbox_heads:
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)

    def forward(
        self,
        tgt: torch.Tensor,
        reference_unact: torch.Tensor,
        memory: torch.Tensor,
        shapes: Sequence[tuple[int, int]],
        attn_mask: torch.Tensor | None = None,
        summary: torch.Tensor | None = None,
        all_layers: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the decoder.

        Args:
            tgt: (B, N, D) initial query content (denoising queries first, then matching queries).
            reference_unact: (B, N, 4) initial reference boxes, inverse-sigmoid cxcywh.
            memory: (B, S, D) flattened encoder levels; shapes: per level (H_l, W_l).
            attn_mask: (N [+1], N [+1]) bool self-attention mask (True = blocked), or None.
            summary: (B, S_fm) frozen foundation-model summary (required when the decoder has image queries).
            all_layers: predict after every layer (training, deep supervision) or only after the last.

        Returns:
            ``logits`` (L', B, N, C) raw class logits and ``boxes`` (L', B, N, 4) cxcywh in [0, 1]; L' = dec_layers
            when ``all_layers`` else 1.
        """
        if (self.image_query_proj is None) != (summary is None):
            raise ValueError("pass the foundation-model summary exactly when the decoder has image queries")
        reference = reference_unact.sigmoid()
        reference_detached = reference.detach()
        logits, boxes = [], []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            query_pos = self.query_pos_head(reference_detached)
            if self.image_query_proj is not None:
                out = self._layer_with_image_query(
                    i, tgt, query_pos, reference_detached, memory, shapes, attn_mask, summary
                )
            else:
                out = layer(tgt, query_pos, reference_detached, memory, shapes, attn_mask)
            delta = self.bbox_heads[i](out)
            refined = (delta + inverse_sigmoid(reference_detached)).sigmoid()
            if all_layers:
                logits.append(self.score_heads[i](out))
                boxes.append(refined if i == 0 else (delta + inverse_sigmoid(reference)).sigmoid())
            elif i == last:
                logits.append(self.score_heads[i](out))
                boxes.append(refined)
            reference, reference_detached, tgt = refined, refined.detach(), out
        return torch.stack(logits), torch.stack(boxes)

    def _layer_with_image_query(self, i, tgt, query_pos, reference, memory, shapes, attn_mask, summary):
        """Layer ``i`` with the image query appended (last position) and removed again."""
        batch = tgt.shape[0]
        image_query = self.image_query_proj[i](summary.to(tgt.dtype))[:, None]
        whole = torch.tensor(WHOLE_IMAGE_BOX, dtype=reference.dtype, device=reference.device).expand(batch, 1, 4)
        out = self.layers[i](
            torch.cat([tgt, image_query], dim=1),
            torch.cat([query_pos, self.query_pos_head(whole)], dim=1),
            torch.cat([reference, whole], dim=1),
            memory,
            shapes,
            attn_mask,
        )
        return out[:, :-1]
