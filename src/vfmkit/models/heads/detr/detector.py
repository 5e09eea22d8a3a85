"""The DETR detector: feature source -> input projection -> encoder -> two-stage query selection -> deformable
decoder with iterative box refinement and contrastive denoising.

Output (``forward(images, targets=None)``):

- ``pred_logits`` (B, Q, C) raw class logits (sigmoid scores, no background class), last decoder layer;
- ``pred_boxes`` (B, Q, 4) boxes cxcywh normalised to [0, 1], last decoder layer;

and in training mode also

- ``aux_outputs``: per earlier decoder layer ``{"pred_logits", "pred_boxes"}`` (when ``aux_loss``);
- ``enc_outputs``: the top-Q encoder proposals ``{"pred_logits", "pred_boxes"}`` (two-stage);
- ``dn_outputs`` and ``dn_meta``: per decoder layer the denoising queries' predictions, and the bookkeeping the
  criterion needs to match them (see :mod:`~vfmkit.models.heads.detr.denoising`), when targets were given;
- ``query_groups``: G, the Group-DETR groups the Q' = G * Q matching predictions (and proposals) consist of, each
  group matched one-to-one on its own (G = 1 without Group DETR).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vfmkit.models.heads.detr.common import MLP, inverse_sigmoid, level_anchors, prior_bias
from vfmkit.models.heads.detr.config import DetrConfig
from vfmkit.models.heads.detr.decoder import DeformableDecoder
from vfmkit.models.heads.detr.denoising import DenoisingQueries, build_denoising_queries, denoising_attn_mask
from vfmkit.models.heads.detr.encoders import DeformableEncoder, HybridEncoder, InputProjection, NoEncoder
from vfmkit.models.heads.detr.sources import FrozenFoundationBranch

Targets = list[dict[str, torch.Tensor]]


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, S, D), index (B, K) -> (B, K, D)."""
    return torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[-1]))


def add_proposal_heads(module: nn.Module, dim: int, classes: int) -> None:
    """Give ``module`` the two-stage selection heads: ``enc_output`` (memory (B, S, D) -> projected memory),
    ``enc_score_head`` (-> class logits (B, S, C)) and ``enc_bbox_head`` (-> box deltas (B, S, 4) added to the
    anchors)."""
    module.enc_output = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim))
    module.enc_score_head = nn.Linear(dim, classes)
    module.enc_bbox_head = MLP(dim, dim, 4, 3)
    nn.init.constant_(module.enc_score_head.bias, prior_bias())
    nn.init.zeros_(module.enc_bbox_head.layers[-1].weight)
    nn.init.zeros_(module.enc_bbox_head.layers[-1].bias)


class ProposalHeads(nn.Module):
    """The two-stage selection heads of one extra Group-DETR group (see :func:`add_proposal_heads`)."""

    def __init__(self, dim: int, classes: int):
        super().__init__()
        add_proposal_heads(self, dim, classes)


class DETRDetector(nn.Module):
    """RT-DETR / DINO / light (LW-DETR) style detector on any feature source.

    Args:
        source: the main feature source (``strides`` must equal ``config.feat_strides``; see ``sources.py``).
        config: the architecture.
        frozen_fm: optional frozen foundation-model branch (image queries + an extra stride-64 encoder level).
    """

    def __init__(self, source: nn.Module, config: DetrConfig, frozen_fm: FrozenFoundationBranch | None = None):
        super().__init__()
        if list(source.strides) != list(config.feat_strides):
            raise ValueError(
                f"the feature source gives strides {source.strides}, the config wants {config.feat_strides}"
            )
        self.config = config
        self.source = source
        self.frozen_fm = frozen_fm
        dim, classes = config.hidden_dim, config.num_classes
        fm_dim = frozen_fm.feature_dim if frozen_fm is not None else None
        self.input_proj = InputProjection(source.channels, dim, config.num_feature_levels, config.norm, fm_dim)
        self.encoder = self._build_encoder(config, config.num_feature_levels + (frozen_fm is not None))
        self.decoder = DeformableDecoder(
            dim,
            classes,
            config.nheads,
            config.dim_feedforward,
            config.dropout,
            config.num_feature_levels,
            config.dec_n_points,
            config.dec_layers,
            image_query_dim=frozen_fm.summary_dim if frozen_fm is not None else None,
        )
        self.denoising_embed = nn.Embedding(classes + 1, dim, padding_idx=classes) if config.dn_number > 0 else None
        if config.two_stage:  # group 0's heads are the detector's own (their names predate Group DETR)
            add_proposal_heads(self, dim, classes)
            self.group_heads = nn.ModuleList(ProposalHeads(dim, classes) for _ in range(config.group_detr - 1))
        else:
            self.query_reference = nn.Parameter(inverse_sigmoid(torch.rand(config.num_queries, 4)))
        learned = config.learnt_init_query or not config.two_stage
        self.tgt_embed = nn.Embedding(config.num_queries * config.group_detr, dim) if learned else None

    @staticmethod
    def _build_encoder(config: DetrConfig, num_levels: int) -> nn.Module:
        if config.encoder == "none":
            return NoEncoder()
        if config.encoder == "hybrid":
            return HybridEncoder(
                config.hidden_dim,
                num_levels,
                config.nheads,
                config.dim_feedforward,
                config.dropout,
                config.enc_layers,
                config.use_encoder_idx,
                config.csp_blocks,
                config.expansion,
                config.norm,
            )
        return DeformableEncoder(
            config.hidden_dim,
            num_levels,
            config.nheads,
            config.enc_n_points,
            config.dim_feedforward,
            config.dropout,
            config.enc_layers,
        )

    def forward(self, images: torch.Tensor, targets: Targets | None = None) -> dict[str, Any]:
        """Detect.

        Args:
            images: (B, 3, H, W) float RGB in [0, 1]; H, W multiples of the backbone's resolution step (and of 32 for
                exact level sizes).
            targets: training only, for denoising: per image ``labels`` (T,) int64 in [0, C) and ``boxes`` (T, 4)
                float cxcywh normalised.

        Returns:
            The output dict described in the module docstring.
        """
        summary, fm_level = self.frozen_fm(images) if self.frozen_fm is not None else (None, None)
        levels = self.encoder(self.input_proj(self.source(images), fm_level))
        levels = levels[: self.config.num_feature_levels]  # the frozen-FM level only enriches the encoder
        shapes = [(int(x.shape[-2]), int(x.shape[-1])) for x in levels]
        memory = torch.cat([x.flatten(2).transpose(1, 2) for x in levels], dim=1)
        groups = self.config.group_detr if self.training else 1
        content, reference, enc_outputs = self._initial_queries(memory, shapes, groups)
        denoising = None
        if self.training and targets is not None and self.denoising_embed is not None:
            denoising = build_denoising_queries(
                targets,
                self.config.num_classes,
                self.config.num_queries * groups,
                self.denoising_embed,
                self.config.dn_number,
                self.config.dn_label_noise_ratio,
                self.config.dn_box_noise_scale,
                extra_queries=int(self.frozen_fm is not None),
                query_groups=groups,
            )
        attn_mask = None
        if denoising is not None:
            content = torch.cat([denoising.content, content], dim=1)
            reference = torch.cat([denoising.reference, reference], dim=1)
            attn_mask = denoising.attn_mask
        elif groups > 1:
            extra = int(self.frozen_fm is not None)
            attn_mask = denoising_attn_mask(0, 1, content.shape[1], extra, groups).to(content.device)
        logits, boxes = self.decoder(content, reference, memory, shapes, attn_mask, summary, all_layers=self.training)
        out = self._outputs(logits, boxes, enc_outputs, denoising)
        if self.training:
            out["query_groups"] = groups
        return out

    def _initial_queries(
        self, memory: torch.Tensor, shapes: list[tuple[int, int]], groups: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor] | None]:
        """Content (B, G * Q, D) and reference boxes (B, G * Q, 4, inverse-sigmoid) of the matching queries, plus the
        selected encoder proposals (two-stage), for ``groups`` = G Group-DETR groups (each its own selection)."""
        batch, queries = memory.shape[0], self.config.num_queries
        if not self.config.two_stage:
            reference = self.query_reference[None].expand(batch, -1, -1)
            return self.tgt_embed.weight[None].expand(batch, -1, -1), reference, None
        if queries > memory.shape[1]:
            raise ValueError(
                f"num_queries {queries} exceeds the {memory.shape[1]} encoder positions of a {shapes} input: "
                "use larger images or fewer queries"
            )
        anchors, valid = level_anchors(shapes, device=memory.device)
        masked = memory.masked_fill(~valid, 0.0)
        selected = [self._select(heads, masked, anchors, valid) for heads in [self, *self.group_heads][:groups]]
        output_memory, reference, enc_logits = (torch.cat(parts, dim=1) for parts in zip(*selected, strict=True))
        enc_outputs = {"pred_logits": enc_logits, "pred_boxes": reference.sigmoid()}
        if self.tgt_embed is not None:
            content = self.tgt_embed.weight[: queries * groups][None].expand(batch, -1, -1)
        else:
            content = output_memory.detach()
        return content, reference.detach(), enc_outputs

    def _select(self, heads: nn.Module, memory: torch.Tensor, anchors: torch.Tensor, valid: torch.Tensor):
        """One selection: the top-Q positions by best class score -> their projected memory (B, Q, D), proposal
        boxes (B, Q, 4, inverse-sigmoid) and class logits (B, Q, C)."""
        output_memory = heads.enc_output(memory)
        enc_logits = heads.enc_score_head(output_memory)
        enc_coords = heads.enc_bbox_head(output_memory) + anchors.to(memory.dtype)
        scores = enc_logits.max(-1).values.masked_fill(~valid[..., 0], float("-inf"))
        index = scores.topk(self.config.num_queries, dim=1).indices
        return _gather(output_memory, index), _gather(enc_coords, index), _gather(enc_logits, index)

    def _outputs(
        self,
        logits: torch.Tensor,
        boxes: torch.Tensor,
        enc_outputs: dict[str, torch.Tensor] | None,
        denoising: DenoisingQueries | None,
    ) -> dict[str, Any]:
        """Split the decoder's (L', B, N_dn + Q, .) predictions into the output dict."""
        n_dn = denoising.meta["dn_num_split"][0] if denoising is not None else 0
        out: dict[str, Any] = {"pred_logits": logits[-1][:, n_dn:], "pred_boxes": boxes[-1][:, n_dn:]}
        if not self.training:
            return out
        if self.config.aux_loss:
            out["aux_outputs"] = [
                {"pred_logits": layer_logits[:, n_dn:], "pred_boxes": layer_boxes[:, n_dn:]}
                for layer_logits, layer_boxes in zip(logits[:-1], boxes[:-1], strict=True)
            ]
        if enc_outputs is not None:
            out["enc_outputs"] = enc_outputs
        if denoising is not None:
            out["dn_outputs"] = [
                {"pred_logits": layer_logits[:, :n_dn], "pred_boxes": layer_boxes[:, :n_dn]}
                for layer_logits, layer_boxes in zip(logits, boxes, strict=True)
            ]
            out["dn_meta"] = denoising.meta
        return out
