"""Mask2Former's masked-attention transformer decoder (``MultiScaleMaskedTransformerDecoder``).

N queries attend, layer by layer, to one of the three pixel-decoder levels in turn (coarsest first: strides 32, 16, 8,
32, ...). Each layer is masked cross-attention (a query sees only the pixels where the previous prediction's sigmoid
mask, resized to that level, is >= 0.5; a query whose mask is empty sees everything), then self-attention among the
queries, then an FFN (post-norm by default). Class logits (K + 1, the last = no object) and mask logits (a 3-layer MLP
embedding dotted with the stride-4 ``mask_features``) are predicted from the initial queries and after every layer:
``dec_layers`` predictions, all supervised in training (deep supervision). Tensors inside are sequence-first
(L, B, C) like the reference, whose module and parameter names are kept (``query_feat``, ``query_embed``,
``level_embed``, ``input_proj``, ``transformer_{self,cross}_attention_layers``, ``transformer_ffn_layers``,
``decoder_norm``, ``class_embed``, ``mask_embed``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vfmkit.models.heads.mask2former.position import PositionEmbeddingSine


def _xavier_init(module: nn.Module) -> None:
    for param in module.parameters():
        if param.dim() > 1:
            nn.init.xavier_uniform_(param)


class SelfAttentionLayer(nn.Module):
    """Self-attention among queries with a residual and LayerNorm (post-norm, or pre-norm with ``normalize_before``)."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        _xavier_init(self)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor | None = None) -> torch.Tensor:
        """tgt: (Q, B, C); query_pos: (Q, B, C) or None -> (Q, B, C)."""
        x = self.norm(tgt) if self.normalize_before else tgt
        q = k = x if query_pos is None else x + query_pos
        tgt = tgt + self.dropout(self.self_attn(q, k, value=x, need_weights=False)[0])
        return tgt if self.normalize_before else self.norm(tgt)


class CrossAttentionLayer(nn.Module):
    """Queries attend to a feature map (optionally masked), with a residual and LayerNorm."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        _xavier_init(self)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
        pos: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tgt: (Q, B, C); memory: (S, B, C); memory_mask: bool (B * heads, Q, S), True = not attended; pos: (S, B or
        1, C); query_pos: (Q, B, C) -> (Q, B, C)."""
        x = self.norm(tgt) if self.normalize_before else tgt
        query = x if query_pos is None else x + query_pos
        key = memory if pos is None else memory + pos
        attended = self.multihead_attn(query, key, value=memory, attn_mask=memory_mask, need_weights=False)[0]
        tgt = tgt + self.dropout(attended)
        return tgt if self.normalize_before else self.norm(tgt)


class FFNLayer(nn.Module):
    """Linear -> ReLU -> Linear with a residual and LayerNorm."""

    def __init__(self, d_model: int, dim_feedforward: int = 2048, dropout: float = 0.0, normalize_before: bool = False):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before
        _xavier_init(self)

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., C)."""
        x = self.norm(tgt) if self.normalize_before else tgt
        tgt = tgt + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x)))))
        return tgt if self.normalize_before else self.norm(tgt)


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (DETR's MLP): in_dim -> hidden_dim ... -> out_dim."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) -> (..., out_dim)."""
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Mask2Former's decoder with learned queries.

    Args:
        in_channels: channels of the pixel-decoder maps (``conv_dim``).
        num_classes: K (the class head predicts K + 1 logits, the last = no object).
        hidden_dim: query width.
        num_queries: N (``num_object_queries``).
        nheads: attention heads.
        dim_feedforward: FFN width.
        dec_layers: predictions made = decoder layers + 1 (the initial queries are predicted too).
        pre_norm: pre-norm layers instead of post-norm.
        mask_dim: channels of ``mask_features``.
        enforce_input_project: 1x1 conv the maps even when ``in_channels == hidden_dim``.
        num_feature_levels: levels cycled through (3).
        dropout: attention / FFN dropout.
    """

    learned_query_features = True

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        hidden_dim: int = 256,
        num_queries: int = 100,
        nheads: int = 8,
        dim_feedforward: int = 2048,
        dec_layers: int = 10,
        pre_norm: bool = False,
        mask_dim: int = 256,
        enforce_input_project: bool = False,
        num_feature_levels: int = 3,
        dropout: float = 0.0,
    ):
        super().__init__()
        if dec_layers < 1:
            raise ValueError(f"dec_layers must be >= 1, got {dec_layers}")
        self.num_classes, self.num_queries, self.num_heads = num_classes, num_queries, nheads
        self.hidden_dim, self.mask_dim, self.dim_feedforward, self.dropout = (
            hidden_dim,
            mask_dim,
            dim_feedforward,
            dropout,
        )
        self.num_layers = dec_layers - 1
        self.num_feature_levels = num_feature_levels
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2)
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads, dropout, pre_norm) for _ in range(self.num_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads, dropout, pre_norm) for _ in range(self.num_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward, dropout, pre_norm) for _ in range(self.num_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        if self.learned_query_features:
            self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                conv = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
                nn.init.kaiming_uniform_(conv.weight, a=1)
                nn.init.constant_(conv.bias, 0)
                self.input_proj.append(conv)
            else:
                self.input_proj.append(nn.Sequential())
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def initial_queries(self, batch: int, mask_features: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
        """The queries before the first layer: (N, B, hidden_dim). Mask2Former: the learned ``query_feat``."""
        return self.query_feat.weight.unsqueeze(1).repeat(1, batch, 1)

    def forward(
        self, features: Sequence[torch.Tensor], mask_features: torch.Tensor, task: torch.Tensor | None = None
    ) -> dict:
        """Decode queries.

        Args:
            features: the pixel decoder's ``num_feature_levels`` maps, coarsest first, each (B, in_channels, h, w).
            mask_features: (B, mask_dim, H/4, W/4).
            task: (B, hidden_dim) task embedding (OneFormer only; ignored here).

        Returns:
            dict: ``pred_logits`` (B, N, K + 1) and ``pred_masks`` (B, N, H/4, W/4) mask logits of the last layer;
            ``aux_outputs`` (training only): a list of ``dec_layers - 1`` dicts with the earlier layers' ones; and
            ``queries`` (N, B, hidden_dim), the initial queries.
        """
        if len(features) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(features)}")
        srcs, pos, sizes = [], [], []
        for level, x in enumerate(features):
            sizes.append((int(x.shape[-2]), int(x.shape[-1])))
            pos.append(self.pe_layer(x).flatten(2).permute(2, 0, 1))  # (HW, 1, C)
            src = self.input_proj[level](x).flatten(2) + self.level_embed.weight[level][None, :, None]
            srcs.append(src.permute(2, 0, 1))  # (HW, B, C)
        batch = mask_features.shape[0]
        query_embed = self.query_embed.weight.unsqueeze(1).repeat(1, batch, 1)
        queries = self.initial_queries(batch, mask_features, task)
        output = queries
        classes, masks = [], []
        logits, mask, attn_mask = self.predict(output, mask_features, sizes[0])
        classes.append(logits)
        masks.append(mask)
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            attn_mask = attn_mask & ~attn_mask.all(-1, keepdim=True)  # a query that would see nothing sees everything
            output = self.transformer_cross_attention_layers[i](
                output, srcs[level], memory_mask=attn_mask, pos=pos[level], query_pos=query_embed
            )
            output = self.transformer_self_attention_layers[i](output, query_pos=query_embed)
            output = self.transformer_ffn_layers[i](output)
            logits, mask, attn_mask = self.predict(output, mask_features, sizes[(i + 1) % self.num_feature_levels])
            classes.append(logits)
            masks.append(mask)
        out = {"pred_logits": classes[-1], "pred_masks": masks[-1], "queries": queries}
        if self.training:
            pairs = zip(classes[:-1], masks[:-1], strict=True)
            out["aux_outputs"] = [{"pred_logits": c, "pred_masks": m} for c, m in pairs]
        return out

    def predict(
        self, output: torch.Tensor, mask_features: torch.Tensor, attn_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prediction heads on (N, B, C) queries.

        Returns:
            class logits (B, N, K + 1), mask logits (B, N, H/4, W/4), and the next layer's attention mask: bool
            (B * nheads, N, h * w) at ``attn_size``, True where the sigmoid mask is < 0.5 (not attended); detached.
        """
        decoded = self.decoder_norm(output).transpose(0, 1)
        logits = self.class_embed(decoded)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(decoded), mask_features)
        attn = F.interpolate(masks, size=attn_size, mode="bilinear", align_corners=False)
        attn = attn.sigmoid().flatten(2).unsqueeze(1).repeat(1, self.num_heads, 1, 1).flatten(0, 1) < 0.5
        return logits, masks, attn.detach()
