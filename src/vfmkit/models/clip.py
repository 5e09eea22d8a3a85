"""``ClipModel``: an image tower and a text tower sharing one embedding space, with the pair-scoring scalars.

- Image tower (:class:`ImageTower`): a vfmkit backbone whose output in the joint space is either its ``summary``
  (open_clip ViT towers: the pooled, projected class token; timm SigLIP2 towers: the attention-pool output) or, for
  RADIO, the summary of one pre-aligned teacher adaptor head (``clip``, ``siglip``, ``siglip2-g``); optionally a new
  linear projection into the text tower's space, for backbones without a pre-aligned head.
- Text tower: a :class:`~vfmkit.models.text.towers.TextTower` built by open_clip, with its tokenizer.
- ``logit_scale`` (log temperature) and ``logit_bias`` (SigLIP; None for softmax-trained CLIP models): a pair scores
  ``exp(logit_scale) * <image, text> + logit_bias`` on L2-normalised embeddings.

``encode_image`` and ``encode_text`` take ``normalize`` like open_clip's models, so open_clip's zero-shot classifier
builder and CLIP_benchmark-style code run on a ``ClipModel`` unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vfmkit.errors import ModelNotFoundError
from vfmkit.models.backbones.base import Backbone, Preprocessing, is_frozen
from vfmkit.models.text.tokenizers import TextTokenizer
from vfmkit.models.text.towers import TextTower


class IncompatibleTowersError(ModelNotFoundError):
    """An image tower that cannot pair with the text tower: no pre-aligned adaptor head, or another width."""


class ImageTower(nn.Module):
    """A backbone, the output of it that is the image feature, and how that feature reaches the joint space.

    The image feature is the backbone's ``summary`` (open_clip ViT towers: the pooled, projected class token; timm
    SigLIP2 towers: the attention-pool output) or, for RADIO, the summary of one pre-aligned teacher adaptor head
    (``clip``, ``siglip``, ``siglip2-g``). It is in the joint space as it is, unless ``projection_dim`` adds a linear
    projection (no bias) to a joint space of that width: the way to pair a backbone without a pre-aligned head (e.g.
    a RADIO checkpoint without adaptor heads, or a DINOv2) with a text tower; the projection starts random.

    Args:
        backbone: a vfmkit backbone (takes float (B, 3, H, W) RGB in [0, 1], normalises inside).
        adaptor_name: RADIO only: the adaptor head whose summary is the image feature (it must be loaded).
        projection_dim: add a linear projection from the feature width to this width.
    """

    def __init__(self, backbone: Backbone, adaptor_name: str | None = None, projection_dim: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.adaptor_name = adaptor_name
        self.feature_dim = tower_feature_dim(backbone, adaptor_name)
        self.projection = nn.Linear(self.feature_dim, projection_dim, bias=False) if projection_dim else None
        self.output_dim = int(projection_dim or self.feature_dim)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.backbone.preprocessing

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """float (B, 3, H, W) RGB in [0, 1] -> float (B, feature_dim) image features (before the projection)."""
        return tower_features(self.backbone, self.adaptor_name, images)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """(B, feature_dim) features -> (B, output_dim) image embeddings (not normalised)."""
        return self.projection(features) if self.projection is not None else features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """float (B, 3, H, W) RGB in [0, 1] -> float (B, output_dim) image embeddings (not normalised)."""
        return self.project(self.features(images))


def tower_feature_dim(backbone: Backbone, adaptor_name: str | None) -> int:
    """Width of the image feature of ``backbone`` (its summary, or the summary of adaptor ``adaptor_name``).

    Raises:
        ModelNotFoundError: ``adaptor_name`` is not a loaded summary adaptor head of the backbone.
    """
    if adaptor_name is None:
        return int(backbone.summary_dim)
    adaptors = getattr(backbone, "adaptors", {})
    if adaptor_name not in adaptors or adaptors[adaptor_name].head_mlp is None:
        have = sorted(adaptors) if adaptors else "none"
        raise IncompatibleTowersError(f"the backbone has no summary adaptor head {adaptor_name!r} (loaded: {have})")
    return int(adaptors[adaptor_name].cfg.summary_mlp[3])


def tower_features(backbone: Backbone, adaptor_name: str | None, images: torch.Tensor) -> torch.Tensor:
    """float (B, 3, H, W) RGB in [0, 1] -> float (B, C) the backbone's summary, or RADIO adaptor ``adaptor_name``'s.

    For RADIO only the chosen adaptor's summary head runs (not its feature head, nor other adaptors); the result
    equals ``backbone(images).adaptors[adaptor_name].summary``.
    """
    if adaptor_name is None:
        return backbone(images).summary
    backbone.check_input(images)
    tokens, _ = backbone.model.forward_tokens(backbone.input_conditioner(images))
    adaptor = backbone.adaptors[adaptor_name]
    return adaptor.head_mlp(tokens[:, adaptor.cfg.token_slot]).float()


class ClipModel(nn.Module):
    """Image and text towers in one embedding space.

    Args:
        visual: the image tower.
        text: the text tower.
        tokenizer: the text tower's tokenizer (ids exactly ``text.context_length`` wide).
        logit_scale: initial log temperature (scores are multiplied by ``exp(logit_scale)``).
        logit_bias: initial bias added to scores (SigLIP), None for none.
        model_id: the registry id, for records and messages.

    Raises:
        ModelNotFoundError: the towers' output widths or the tokenizer's context length do not match.
    """

    def __init__(
        self,
        visual: ImageTower,
        text: TextTower,
        tokenizer: TextTokenizer,
        logit_scale: float,
        logit_bias: float | None = None,
        model_id: str = "",
    ) -> None:
        super().__init__()
        if visual.output_dim != text.output_dim:
            raise IncompatibleTowersError(
                f"{model_id}: image embeddings are {visual.output_dim}-d but text embeddings {text.output_dim}-d"
            )
        if tokenizer.context_length != text.context_length:
            raise ModelNotFoundError(
                f"{model_id}: the tokenizer pads to {tokenizer.context_length} ids, the text tower takes "
                f"{text.context_length}"
            )
        self.visual = visual
        self.text = text
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.embed_dim = visual.output_dim
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(logit_bias))) if logit_bias is not None else None

    @property
    def preprocessing(self) -> Preprocessing:
        """How to feed :meth:`encode_image` (mean/std are applied inside)."""
        return self.visual.preprocessing

    @property
    def context_length(self) -> int:
        return self.text.context_length

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """float (B, 3, H, W) RGB in [0, 1] -> float (B, embed_dim), L2-normalised unless ``normalize=False``."""
        features = self.visual(images)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, token_ids: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """int64 (B, context_length) ids -> float (B, embed_dim), L2-normalised unless ``normalize=False``."""
        features = self.text(token_ids)
        return F.normalize(features, dim=-1) if normalize else features

    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:
        """int64 (N, context_length) ids of ``texts`` (cleaned and padded by the model's tokenizer), on the CPU."""
        return self.tokenizer(texts)

    def logits(self, image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """(N_img, N_txt) pair scores ``exp(logit_scale) * img @ txt.T + logit_bias`` of normalised embeddings."""
        scores = self.logit_scale.exp() * image_embeddings @ text_embeddings.T
        return scores + self.logit_bias if self.logit_bias is not None else scores

    def forward(self, images: torch.Tensor, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised image (B, D) and text (B', D) embeddings (the inputs of the contrastive losses)."""
        return self.encode_image(images), self.encode_text(token_ids)

    def vision_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Named parameters of the image tower (``visual.*``: backbone and added projection)."""
        return self.visual.named_parameters(prefix="visual")

    def text_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Named parameters of the text tower (``text.*``)."""
        return self.text.named_parameters(prefix="text")

    def freeze(self, vision: bool = False, text: bool = False) -> None:
        """Stop gradients into the image backbone and/or the text tower (the logit scalars and an added image
        projection are untouched: a new projection is random and always trains)."""
        for flag, tower in ((vision, self.visual.backbone), (text, self.text)):
            if flag:
                tower.requires_grad_(False)

    def train(self, mode: bool = True) -> ClipModel:
        """Set training mode; a frozen image backbone or text tower stays in eval mode (no dropout, fixed outputs)."""
        super().train(mode)
        for tower in (self.visual.backbone, self.text):
            if is_frozen(tower):
                tower.eval()
        return self

    def no_weight_decay(self) -> set[str]:
        """Parameter names without weight decay: logit scalars, position/class embeddings of both towers."""
        names = {"logit_scale", "logit_bias"} | {f"text.{n}" for n in self.text.no_weight_decay()}
        names |= {f"visual.backbone.{n}" for n in self.visual.backbone.no_weight_decay()}
        return names & {name for name, _ in self.named_parameters()}
