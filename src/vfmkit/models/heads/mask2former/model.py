"""The universal segmenter: neck (4-level pyramid) -> MSDeformAttn pixel decoder -> masked-attention decoder, with a
Mask2Former or a OneFormer head, and the graph exported to ONNX.

Field names follow TAO / the reference configs (``num_object_queries``, ``dec_layers``, ``hidden_dim``, ``nheads``,
``dim_feedforward``, ``transformer_enc_layers``, ``conv_dim``, ``mask_dim``, ...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from vfmkit.models.heads.mask2former.decoder import MultiScaleMaskedTransformerDecoder
from vfmkit.models.heads.mask2former.oneformer import OneFormerDecoder, TaskMLP, TextMapper, task_tokens
from vfmkit.models.heads.mask2former.pixel_decoder import MSDeformAttnPixelDecoder

HEADS = ("mask2former", "oneformer")
"""``mask2former``: learned queries; ``oneformer``: task-conditioned queries + the text branch."""


@dataclass(frozen=True)
class UniversalHeadConfig:
    """Sizes of the pixel decoder, the transformer decoder and (``oneformer``) the task / text parts.

    Attributes:
        head: ``mask2former`` or ``oneformer``.
        num_object_queries: N queries (OneFormer: N - 1 object queries + the task token).
        hidden_dim: query width.
        nheads: attention heads (decoder and pixel decoder).
        dim_feedforward: decoder FFN width.
        dec_layers: predictions per forward = masked-attention layers + 1.
        pre_norm: pre-norm decoder layers.
        enforce_input_proj: project pixel-decoder maps even when ``conv_dim == hidden_dim``.
        dropout: decoder dropout.
        conv_dim: pixel decoder width.
        mask_dim: channels of the mask features (and of the mask embeddings).
        transformer_enc_layers: deformable encoder layers of the pixel decoder.
        pixel_decoder_dim_feedforward: their FFN width.
        pixel_decoder_n_points: deformable samples per head and level.
        norm: norm of the pixel decoder convs (``gn``, ``bn``, ``ln``).
        class_dec_layers: OneFormer class-transformer layers.
        use_task_norm: OneFormer: LayerNorm the task token.
        task_seq_len: tokens of the task prompt (77).
        text_context_length: tokens per contrastive text (77).
        text_width: text transformer width.
        text_num_layers: text transformer layers.
        n_ctx: learned context vectors appended to the text queries (must be < num_object_queries).
        text_proj_num_layers: projector MLP layers.
        contrastive_temperature: initial temperature of the query-text contrastive loss.
    """

    head: str = "oneformer"
    num_object_queries: int = 150
    hidden_dim: int = 256
    nheads: int = 8
    dim_feedforward: int = 2048
    dec_layers: int = 10
    pre_norm: bool = False
    enforce_input_proj: bool = False
    dropout: float = 0.0
    conv_dim: int = 256
    mask_dim: int = 256
    transformer_enc_layers: int = 6
    pixel_decoder_dim_feedforward: int = 1024
    pixel_decoder_n_points: int = 4
    norm: str = "gn"
    class_dec_layers: int = 2
    use_task_norm: bool = True
    task_seq_len: int = 77
    text_context_length: int = 77
    text_width: int = 256
    text_num_layers: int = 6
    n_ctx: int = 16
    text_proj_num_layers: int = 2
    contrastive_temperature: float = 0.07

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}")
        if self.head == "oneformer" and not 0 <= self.n_ctx < self.num_object_queries:
            raise ValueError(
                f"n_ctx ({self.n_ctx}) must be smaller than num_object_queries ({self.num_object_queries})"
            )

    @property
    def num_texts(self) -> int:
        """Texts per image the contrastive branch expects (``num_object_queries - n_ctx``); 0 for mask2former."""
        return self.num_object_queries - self.n_ctx if self.head == "oneformer" else 0


class UniversalSegmenter(nn.Module):
    """``images (B, 3, H, W) in [0, 1]`` (+ task tokens for OneFormer) -> class and mask logits per query.

    Args:
        neck: a vfmkit neck (:func:`vfmkit.models.necks.build_neck`): 4 maps at strides 4/8/16/32.
        num_classes: K (the class head predicts K + 1 logits, the last = no object).
        config: head sizes (default :class:`UniversalHeadConfig`); ``**overrides`` replace single fields.
    """

    def __init__(self, neck: nn.Module, num_classes: int, config: UniversalHeadConfig | None = None, **overrides):
        super().__init__()
        config = replace(config or UniversalHeadConfig(), **overrides)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.config, self.num_classes = config, int(num_classes)
        self.neck = neck
        channels = int(neck.out_channels)
        self.pixel_decoder = MSDeformAttnPixelDecoder(
            [channels] * 4,
            conv_dim=config.conv_dim,
            mask_dim=config.mask_dim,
            norm=config.norm,
            transformer_enc_layers=config.transformer_enc_layers,
            transformer_nheads=config.nheads,
            transformer_dim_feedforward=config.pixel_decoder_dim_feedforward,
            transformer_n_points=config.pixel_decoder_n_points,
        )
        decoder_args = {
            "hidden_dim": config.hidden_dim,
            "num_queries": config.num_object_queries,
            "nheads": config.nheads,
            "dim_feedforward": config.dim_feedforward,
            "dec_layers": config.dec_layers,
            "pre_norm": config.pre_norm,
            "mask_dim": config.mask_dim,
            "enforce_input_project": config.enforce_input_proj,
            "dropout": config.dropout,
        }
        if config.head == "oneformer":
            self.predictor = OneFormerDecoder(
                config.conv_dim,
                num_classes,
                **decoder_args,
                class_dec_layers=config.class_dec_layers,
                use_task_norm=config.use_task_norm,
            )
            self.task_mlp = TaskMLP(config.task_seq_len, config.hidden_dim)
            self.text_mapper = TextMapper(
                config.hidden_dim,
                config.text_context_length,
                config.text_width,
                config.text_num_layers,
                config.n_ctx,
                config.text_proj_num_layers,
                config.contrastive_temperature,
            )
        else:
            self.predictor = MultiScaleMaskedTransformerDecoder(config.conv_dim, num_classes, **decoder_args)
            self.task_mlp = self.text_mapper = None

    @property
    def backbone(self) -> nn.Module:
        return self.neck.backbone

    @property
    def needs_task(self) -> bool:
        """True for the oneformer head (``task_tokens`` required)."""
        return self.task_mlp is not None

    def forward(
        self, images: torch.Tensor, task_tokens: torch.Tensor | None = None, text_tokens: torch.Tensor | None = None
    ) -> dict:
        """Predict class and mask logits per query.

        Args:
            images: float (B, 3, H, W) RGB in [0, 1]; H, W multiples of the backbone's resolution step (and of 32).
            task_tokens: int64 (B, 77) task-prompt token ids (:func:`task_tokens`); required by ``oneformer``,
                must be None for ``mask2former``.
            text_tokens: int64 (B, num_texts, 77) target-text token ids (``oneformer`` training: adds ``texts``).

        Returns:
            dict with ``pred_logits`` float (B, N, K + 1), ``pred_masks`` float (B, N, H/4, W/4) mask logits; in
            training ``aux_outputs`` (list of ``dec_layers - 1`` dicts of the two, earlier layers first); for
            ``oneformer`` also ``contrastive_logits`` (B, N, hidden_dim) (the initial queries) and, when
            ``text_tokens`` are given, ``texts`` (B, N, hidden_dim) and the scalar ``logit_scale``.
        """
        if self.needs_task and task_tokens is None:
            raise ValueError("the oneformer head needs task_tokens (B, 77); see task_tokens(['panoptic', ...])")
        if not self.needs_task and (task_tokens is not None or text_tokens is not None):
            raise ValueError("the mask2former head takes no task or text tokens")
        features = self.neck(images).features
        mask_features, multi_scale = self.pixel_decoder(features)
        task = self.task_mlp(task_tokens) if self.needs_task else None
        out = self.predictor(multi_scale, mask_features, task)
        queries = out.pop("queries")
        if self.needs_task:
            out["contrastive_logits"] = queries.transpose(0, 1)
            if text_tokens is not None:
                out["texts"] = self.text_mapper(text_tokens)
                out["logit_scale"] = self.text_mapper.logit_scale
        return out

    def config_dict(self) -> dict:
        """The head config as plain data (for checkpoints)."""
        return asdict(self.config)


class ExportableUniversalSegmenter(nn.Module):
    """The exported graph (TAO's I/O names): ``images`` (+ ``task_tokens``) -> ``pred_logits``, ``pred_masks``.

    Args:
        model: a trained :class:`UniversalSegmenter` (its text branch is not exported).
        task: fix the task (``semantic``, ``instance`` or ``panoptic``): the graph takes only ``images``. None with a
            oneformer head: the graph also takes ``task_tokens`` int64 (B, 77). Must be None for mask2former.

    Attributes:
        input_names: ``("images",)`` or ``("images", "task_tokens")``.
        output_names: ``("pred_logits", "pred_masks")``.
    """

    output_names = ("pred_logits", "pred_masks")

    def __init__(self, model: UniversalSegmenter, task: str | None = None):
        super().__init__()
        if task is not None and not model.needs_task:
            raise ValueError("a mask2former model has no task input; export it without a task")
        self.model = model
        self.input_names = ("images", "task_tokens") if model.needs_task and task is None else ("images",)
        fixed = task_tokens([task], model.config.task_seq_len) if task is not None else torch.zeros(0)
        self.register_buffer("fixed_task_tokens", fixed, persistent=False)

    def forward(
        self, images: torch.Tensor, task_tokens: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """images float (B, 3, H, W) in [0, 1]; task_tokens int64 (B, 77) when the task is not fixed ->
        (pred_logits (B, N, K + 1), pred_masks (B, N, H/4, W/4))."""
        if self.model.needs_task and task_tokens is None:
            task_tokens = self.fixed_task_tokens.expand(images.shape[0], -1)
        out = self.model(images, task_tokens)
        return out["pred_logits"], out["pred_masks"]
