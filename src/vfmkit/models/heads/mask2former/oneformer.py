"""What OneFormer (Jain et al., CVPR 2023) adds to Mask2Former: the task token, task-conditioned queries and the
query-text contrastive branch.

- Task token: ``"the task is {semantic|instance|panoptic}"`` tokenised with CLIP's BPE (open_clip's
  :class:`~open_clip.tokenizer.SimpleTokenizer`, whose vocabulary ships in the wheel) to 77 ids, fed **as a float
  vector** to a 2-layer MLP (:class:`TaskMLP`), as the reference does.
- Query init (:class:`OneFormerDecoder`): a 2-layer DETR-style "class transformer" turns N - 1 learned query
  positions into object queries; the (LayerNorm-ed) task token is appended as the N-th query. The reference calls its
  class transformer with the sine position encoding of the mask features as the memory and the projected mask
  features as its positions (``class_transformer(feats, None, query_embed[:-1], class_input_proj(mask_features),
  task)``): kept as is, so attention keys carry content + position and values carry position.
- Text branch (training only, :class:`TextMapper`): a small causal CLIP text transformer (open_clip's
  :class:`~open_clip.transformer.TextTransformer`, argmax pooling, no projection) encodes one text per target
  ("a photo with a {class}", padded with "a {task} photo"), a 2-layer MLP projects to ``hidden_dim`` and ``n_ctx``
  learned context vectors are appended, giving N text queries per image for the contrastive loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch
from open_clip.tokenizer import tokenize
from open_clip.transformer import QuickGELU, TextTransformer
from torch import nn

from vfmkit.models.heads.mask2former.decoder import MLP, MultiScaleMaskedTransformerDecoder

TASKS = ("semantic", "instance", "panoptic")
"""The tasks a OneFormer model is conditioned on."""

CLIP_VOCAB_SIZE = 49408


def task_text(task: str) -> str:
    """The task prompt of ``task``: ``"the task is panoptic"`` (CLIP's tokenizer lower-cases anyway).

    Raises:
        ValueError: ``task`` is not semantic, instance or panoptic.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return f"the task is {task}"


@lru_cache(maxsize=4096)
def _tokenize_one(text: str, context_length: int) -> torch.Tensor:
    return tokenize([text], context_length=context_length)[0]


def tokenize_texts(texts: Sequence[str], context_length: int = 77) -> torch.Tensor:
    """CLIP BPE token ids of ``texts``: int64 (len(texts), context_length), start/end tokens included, zero-padded,
    truncated to the context (the end token kept). Repeated texts are tokenised once (cached)."""
    if not texts:
        return torch.zeros(0, context_length, dtype=torch.int64)
    return torch.stack([_tokenize_one(str(text), context_length) for text in texts])


def task_tokens(tasks: Sequence[str], context_length: int = 77) -> torch.Tensor:
    """Token ids of the task prompts: int64 (len(tasks), context_length), the ``task_tokens`` model/ONNX input."""
    return tokenize_texts([task_text(task) for task in tasks], context_length)


class TaskMLP(nn.Module):
    """``task_mlp``: token ids (B, L) (any dtype; used as float values, as the reference) -> (B, hidden_dim)."""

    def __init__(self, task_seq_len: int = 77, hidden_dim: int = 256):
        super().__init__()
        self.task_seq_len = task_seq_len
        self.task_mlp = MLP(task_seq_len, hidden_dim, hidden_dim, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 2 or tokens.shape[1] != self.task_seq_len:
            raise ValueError(f"task tokens must be (B, {self.task_seq_len}), got {tuple(tokens.shape)}")
        return self.task_mlp(tokens.float())


class QueryTransformerLayer(nn.Module):
    """DETR's post-norm decoder layer: self-attention, cross-attention to a memory, ReLU FFN."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout1, self.dropout2, self.dropout3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, tgt, memory, pos, query_pos) -> torch.Tensor:
        """tgt, query_pos: (N, B, C); memory, pos: (S, B, C) -> (N, B, C)."""
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, value=tgt, need_weights=False)[0]))
        attended = self.multihead_attn(tgt + query_pos, memory + pos, value=memory, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout2(attended))
        hidden = self.linear2(self.dropout(torch.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(hidden))


class QueryTransformer(nn.Module):
    """OneFormer's ``class_transformer``: no encoder layers, ``num_layers`` decoder layers and a final LayerNorm."""

    def __init__(self, d_model: int, nhead: int, num_layers: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            QueryTransformerLayer(d_model, nhead, dim_feedforward, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        for param in self.parameters():
            if param.dim() > 1:
                nn.init.xavier_uniform_(param)

    def forward(
        self, src: torch.Tensor, query_embed: torch.Tensor, pos_embed: torch.Tensor, task: torch.Tensor | None
    ) -> torch.Tensor:
        """src: (B or 1, C, H, W) memory map; query_embed: (N, C); pos_embed: (B, C, H, W); task: (1, B, C) or None
        (zeros) as the initial queries -> (N, B, C)."""
        batch = pos_embed.shape[0]
        memory = src.flatten(2).permute(2, 0, 1).expand(-1, batch, -1)
        pos = pos_embed.flatten(2).permute(2, 0, 1)
        query_pos = query_embed.unsqueeze(1).repeat(1, batch, 1)
        tgt = torch.zeros_like(query_pos) if task is None else task.repeat(query_pos.shape[0], 1, 1)
        for layer in self.layers:
            tgt = layer(tgt, memory, pos, query_pos)
        return self.norm(tgt)


class OneFormerDecoder(MultiScaleMaskedTransformerDecoder):
    """The masked-attention decoder with OneFormer's task-conditioned query init (no learned ``query_feat``).

    Args:
        class_dec_layers: layers of the class transformer.
        use_task_norm: LayerNorm (``decoder_norm``) the task token before use.
        *args, **kwargs: see :class:`MultiScaleMaskedTransformerDecoder`.
    """

    learned_query_features = False

    def __init__(self, *args, class_dec_layers: int = 2, use_task_norm: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.use_task_norm = use_task_norm
        hidden = self.hidden_dim
        self.class_transformer = QueryTransformer(
            hidden, self.num_heads, class_dec_layers, self.dim_feedforward, self.dropout
        )
        self.class_input_proj = nn.Conv2d(self.mask_dim, hidden, kernel_size=1)
        nn.init.kaiming_uniform_(self.class_input_proj.weight, a=1)
        nn.init.constant_(self.class_input_proj.bias, 0)

    def initial_queries(self, batch: int, mask_features: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
        """N - 1 class-transformer queries + the task token: (N, B, hidden_dim)."""
        if task is None:
            raise ValueError(
                "the oneformer head needs task tokens (B, 77) (vfmkit.models.heads.mask2former.task_tokens)"
            )
        task = task.unsqueeze(0)  # (1, B, C)
        if self.use_task_norm:
            task = self.decoder_norm(task)
        feats = self.pe_layer(mask_features)
        objects = self.class_transformer(
            feats,
            self.query_embed.weight[:-1],
            self.class_input_proj(mask_features),
            task if self.use_task_norm else None,
        )
        return torch.cat([objects, task], dim=0)


class TextMapper(nn.Module):
    """Text queries for the contrastive loss: token ids (B, T, L) -> (B, T + n_ctx, hidden_dim).

    Args:
        hidden_dim: query width.
        context_length: tokens per text (77).
        width: text transformer width.
        num_layers: text transformer layers.
        n_ctx: learned context vectors appended to each image's text queries.
        proj_num_layers: layers of the projector MLP (width -> hidden_dim).
        contrastive_temperature: initial temperature; ``logit_scale`` = log(1 / temperature) is learned.

    Attributes:
        logit_scale: scalar parameter; the loss uses ``min(exp(logit_scale), 100)``.
    """

    def __init__(
        self,
        hidden_dim: int = 256,
        context_length: int = 77,
        width: int = 256,
        num_layers: int = 6,
        n_ctx: int = 16,
        proj_num_layers: int = 2,
        contrastive_temperature: float = 0.07,
    ):
        super().__init__()
        self.context_length = context_length
        self.text_encoder = TextTransformer(
            context_length=context_length,
            vocab_size=CLIP_VOCAB_SIZE,
            width=width,
            heads=max(1, width // 64),
            layers=num_layers,
            output_dim=None,
            proj_type="none",
            act_layer=QuickGELU,
            pool_type="argmax",
        )
        self.text_projector = MLP(width, hidden_dim, hidden_dim, proj_num_layers)
        self.prompt_ctx = nn.Embedding(n_ctx, hidden_dim) if n_ctx > 0 else None
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / contrastive_temperature)))

    @property
    def n_ctx(self) -> int:
        return 0 if self.prompt_ctx is None else self.prompt_ctx.num_embeddings

    def forward(self, text_tokens: torch.Tensor) -> torch.Tensor:
        """text_tokens: int64 (B, T, context_length) -> float (B, T + n_ctx, hidden_dim)."""
        if text_tokens.ndim != 3:
            raise ValueError(f"text tokens must be (B, T, L), got {tuple(text_tokens.shape)}")
        batch, count, length = text_tokens.shape
        encoded = self.text_projector(self.text_encoder(text_tokens.reshape(batch * count, length)))
        texts = encoded.reshape(batch, count, -1)
        if self.prompt_ctx is not None:
            texts = torch.cat([texts, self.prompt_ctx.weight.unsqueeze(0).expand(batch, -1, -1)], dim=1)
        return texts
