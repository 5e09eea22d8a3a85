"""Visual ChangeNet heads on a Siamese dense neck (shared weights): change segmentation and golden-vs-test
classification (learnable difference or euclidean embedding distance).

Siamese extraction: both images of a pair go through ONE neck (backbone + pyramid) in a single batched call, so the
weights are shared by construction. Every image is float32 (B, 3, H, W) RGB in [0, 1] (H, W multiples of 32); the
neck normalises it. Pyramid levels are at strides 4, 8, 16, 32 (finest first).

Segment decoder (ChangeFormer-style, as TAO's Visual ChangeNet): per level a 1x1 projection (shared by A and B) to
``embed_dim``, a learnable :class:`DifferenceModule` on [feat_A, feat_B, |feat_A - feat_B|], coarse-to-fine
accumulation (each level's difference + the upsampled coarser one), an auxiliary 2-class head per level, concat of
the four accumulated differences at stride 4 -> 1x1 fuse, then two x2 transposed-conv upsamplings each followed by a
residual block (channels halved at each, unlike ChangeFormer, to keep full-resolution memory affordable) and a final
1x1 conv: change logits (B, 2, H, W) at the input resolution. Five outputs in all, ordered
``[aux stride 32, aux stride 16, aux stride 8, aux stride 4, final]``.

Classify heads (inputs with L lighting conditions are (B, 3L, H, W); each condition is one image for the neck):

- learnable: the segment decoder's difference path on the first ``levels`` levels, fused at stride 4; global average
  and max pooling per condition, concatenated over conditions -> MLP -> logits (B, 2) (index 1 = FAIL). Multi-golden
  (goldens (B, N, 3L, H, W)): the fused difference map is computed against every golden and reduced over goldens
  before pooling: ``min`` (default; a pixel counts as different only when it differs from every golden, so normal
  variation covered by any golden is forgiven) or ``mean``.
- euclidean: per image, [neck summary, global average and max pools of each level] per condition -> MLP -> embedding
  (``embedding_dim``); score = L2 distance between test and golden embeddings, trained with the contrastive loss
  (:func:`contrastive_loss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vfmkit.models.necks.common import NeckOutput, resize_to

NUM_OUTPUTS = 5


def conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> list[nn.Module]:
    """Conv (no bias) -> BatchNorm -> ReLU, 'same' padding."""
    return [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class DifferenceModule(nn.Module):
    """Learnable difference of two feature maps: two conv3x3-BN-ReLU on [a, b, |a - b|].

    Args:
        channels: C of both inputs and of the output.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(*conv_bn_relu(3 * channels, channels), *conv_bn_relu(channels, channels))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a, b: (B, C, h, w) -> (B, C, h, w) non-negative difference features."""
        return self.net(torch.cat([a, b, (a - b).abs()], dim=1))


class ResidualBlock(nn.Module):
    """x + conv3x3-BN-ReLU-conv3x3-BN(x), then ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            *conv_bn_relu(channels, channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, C, h, w)."""
        return F.relu(x + self.body(x))


class DifferencePyramid(nn.Module):
    """Per-level projection + difference modules with coarse-to-fine accumulation.

    Args:
        in_channels: channels of the neck's levels.
        embed_dim: decoder channels E.
        levels: how many levels are used, finest first (1-4).
    """

    def __init__(self, in_channels: int, embed_dim: int, levels: int = 4):
        super().__init__()
        self.levels = levels
        self.proj = nn.ModuleList(nn.Conv2d(in_channels, embed_dim, 1) for _ in range(levels))
        self.diff = nn.ModuleList(DifferenceModule(embed_dim) for _ in range(levels))

    def forward(self, feats_a: list[torch.Tensor], feats_b: list[torch.Tensor]) -> list[torch.Tensor]:
        """Two pyramids (finest first, (B, C, h_l, w_l)) -> accumulated differences (B, E, h_l, w_l), finest first."""
        out: list[torch.Tensor] = []
        coarser = None
        for level in reversed(range(self.levels)):
            proj = self.proj[level]
            diff = self.diff[level](proj(feats_a[level]), proj(feats_b[level]))
            if coarser is not None:
                diff = diff + resize_to(coarser, tuple(diff.shape[-2:]))
            out.insert(0, diff)
            coarser = diff
        return out


def siamese(neck: nn.Module, a: torch.Tensor, b: torch.Tensor) -> tuple[NeckOutput, NeckOutput]:
    """Run both image batches through ONE neck call (shared weights, one batch) and split the outputs."""
    out = neck(torch.cat([a, b]))
    # reshape with -1 instead of slicing at len(a): the batch size stays symbolic in exported graphs
    features = [f.reshape(2, -1, *f.shape[1:]) for f in out.features]
    summary = out.summary.reshape(2, -1, *out.summary.shape[1:])
    return (NeckOutput([f[0] for f in features], summary[0]), NeckOutput([f[1] for f in features], summary[1]))


class ChangeSegmenter(nn.Module):
    """Siamese change segmentation: ``(image_a, image_b) -> five logits maps`` (see the module docstring).

    Args:
        neck: a dense neck (``build_neck``), output levels with ``neck.out_channels`` channels.
        embed_dim: decoder channels E (the final upsampling stages use E/2 and E/4).
        num_classes: 2 (unchanged, changed).
    """

    def __init__(self, neck: nn.Module, embed_dim: int = 128, num_classes: int = 2):
        super().__init__()
        self.neck = neck
        self.pyramid = DifferencePyramid(neck.out_channels, embed_dim)
        self.aux_heads = nn.ModuleList(nn.Conv2d(embed_dim, num_classes, 1) for _ in range(4))
        self.fuse = nn.Sequential(*conv_bn_relu(4 * embed_dim, embed_dim, 1))
        half, quarter = max(embed_dim // 2, 8), max(embed_dim // 4, 8)
        self.up1 = nn.ConvTranspose2d(embed_dim, half, 2, 2)
        self.res1 = ResidualBlock(half)
        self.up2 = nn.ConvTranspose2d(half, quarter, 2, 2)
        self.res2 = ResidualBlock(quarter)
        self.classifier = nn.Conv2d(quarter, num_classes, 1)

    def forward_all(self, image_a: torch.Tensor, image_b: torch.Tensor) -> list[torch.Tensor]:
        """Both images (B, 3, H, W) in [0, 1] -> [aux s32 (B, 2, H/32, W/32), aux s16, aux s8, aux s4 (B, 2, H/4,
        W/4), final (B, 2, H, W)] logits."""
        out_a, out_b = siamese(self.neck, image_a, image_b)
        diffs = self.pyramid(out_a.features, out_b.features)
        aux = [head(d) for head, d in zip(self.aux_heads, diffs, strict=True)]
        size = tuple(diffs[0].shape[-2:])
        fused = self.fuse(torch.cat([resize_to(d, size) for d in diffs], dim=1))
        x = self.res2(self.up2(self.res1(self.up1(fused))))
        final = resize_to(self.classifier(x), tuple(image_a.shape[-2:]))
        return [*reversed(aux), final]

    def forward(self, image_a: torch.Tensor, image_b: torch.Tensor) -> torch.Tensor:
        """Both images (B, 3, H, W) in [0, 1] -> final change logits (B, 2, H, W) (index 1 = changed)."""
        return self.forward_all(image_a, image_b)[-1]


def multi_output_loss(
    outputs: list[torch.Tensor], target: torch.Tensor, weights, class_weights: torch.Tensor, ignore_index: int
) -> torch.Tensor:
    """Weighted sum of the cross-entropies of every output, each logits map bilinearly resized to the target.

    Args:
        outputs: logits (B, 2, h_i, w_i).
        target: int64 (B, H, W) in {0, 1, ignore_index}.
        weights: one float per output.
        class_weights: float (2,) CE class weights.
        ignore_index: target value left out.
    """
    size = tuple(target.shape[-2:])
    total = outputs[0].new_zeros(())
    for weight, logits in zip(weights, outputs, strict=True):
        if weight:
            ce = F.cross_entropy(resize_to(logits, size), target, weight=class_weights, ignore_index=ignore_index)
            total = total + weight * ce
    return total


def split_lights(images: torch.Tensor) -> torch.Tensor:
    """(B, 3L, H, W) -> (B * L, 3, H, W), conditions of a sample consecutive."""
    c, h, w = images.shape[1:]
    if c % 3:
        raise ValueError(f"inputs must have 3 channels per lighting condition, got {c}")
    return images.reshape(-1, 3, h, w)


class LearnableChangeClassifier(nn.Module):
    """Golden-vs-test classifier with learnable difference modules (TAO architecture 2).

    Args:
        neck: a dense neck.
        embed_dim: difference-feature channels E.
        lights: lighting conditions L per sample (3L input channels).
        levels: pyramid levels fused, finest first.
        hidden: MLP hidden width.
        golden_reduce: ``min`` or ``mean`` over goldens (multi-golden).
    """

    def __init__(
        self,
        neck: nn.Module,
        embed_dim: int = 128,
        lights: int = 1,
        levels: int = 4,
        hidden: int = 64,
        golden_reduce: str = "min",
    ):
        super().__init__()
        self.neck, self.lights, self.golden_reduce = neck, lights, golden_reduce
        self.pyramid = DifferencePyramid(neck.out_channels, embed_dim, levels)
        self.fuse = nn.Sequential(*conv_bn_relu(levels * embed_dim, embed_dim, 1))
        self.mlp = nn.Sequential(nn.Linear(2 * embed_dim * lights, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2))

    def _difference_map(self, test: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
        """(M, 3, H, W) pairs -> fused difference map (M, E, H/4, W/4)."""
        out_t, out_g = siamese(self.neck, test, golden)
        diffs = self.pyramid(out_t.features, out_g.features)
        size = tuple(diffs[0].shape[-2:])
        return self.fuse(torch.cat([resize_to(d, size) for d in diffs], dim=1))

    def forward(self, image: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
        """image (B, 3L, H, W), golden (B, 3L, H, W) or (B, N, 3L, H, W), in [0, 1] -> logits (B, 2)."""
        goldens = golden.unsqueeze(1) if golden.ndim == 4 else golden
        n = goldens.shape[1]  # batch sizes stay symbolic (-1) for export
        test = split_lights(image.unsqueeze(1).expand(-1, n, -1, -1, -1).reshape(-1, *image.shape[1:]))
        diff = self._difference_map(test, split_lights(goldens.reshape(-1, *goldens.shape[2:])))
        diff = diff.reshape(-1, n, self.lights, *diff.shape[1:])
        diff = diff.amin(dim=1) if self.golden_reduce == "min" else diff.mean(dim=1)  # (B, L, E, h, w)
        pooled = torch.cat([diff.mean(dim=(-2, -1)), diff.amax(dim=(-2, -1))], dim=-1)  # (B, L, 2E)
        return self.mlp(pooled.flatten(1))

    def score(self, image: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
        """FAIL probability (B,) in [0, 1]."""
        return self.forward(image, golden).softmax(dim=-1)[:, 1]


class EuclideanChangeClassifier(nn.Module):
    """Golden-vs-test by embedding distance (TAO architecture 1).

    Args:
        neck: a dense neck.
        lights: lighting conditions L per sample.
        embedding_dim: output embedding size.
        hidden: MLP hidden width (TAO: 512).
    """

    def __init__(self, neck: nn.Module, lights: int = 1, embedding_dim: int = 16, hidden: int = 256):
        super().__init__()
        self.neck, self.lights = neck, lights
        summary_dim = neck.backbone.summary_dim
        width = (summary_dim + 8 * neck.out_channels) * lights
        self.norm = nn.BatchNorm1d(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, embedding_dim),
        )

    def _embed(self, out: NeckOutput) -> torch.Tensor:
        pooled = [out.summary, *(f.mean(dim=(-2, -1)) for f in out.features)]
        pooled += [f.amax(dim=(-2, -1)) for f in out.features]
        pooled = torch.cat(pooled, dim=1)
        return self.mlp(self.norm(pooled.reshape(-1, self.lights * pooled.shape[1])))

    def embeddings(self, image: torch.Tensor, golden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image, golden (B, 3L, H, W) in [0, 1] -> embeddings (B, D) each (one Siamese neck pass)."""
        out_t, out_g = siamese(self.neck, split_lights(image), split_lights(golden))
        return self._embed(out_t), self._embed(out_g)

    def forward(self, image: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
        """image, golden (B, 3L, H, W) in [0, 1] -> L2 distance (B,) between their embeddings."""
        emb_t, emb_g = self.embeddings(image, golden)
        return pair_distance(emb_t, emb_g)

    def score(self, image: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
        """The distance (B,) (FAIL when above the threshold)."""
        return self.forward(image, golden)


def pair_distance(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Row-wise L2 distance (B,) of (B, D) embeddings, with a smooth gradient at 0."""
    return ((a - b).pow(2).sum(dim=1) + eps).sqrt()


def contrastive_loss(distance: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Hadsell et al. contrastive loss: mean of (1 - y) d^2 + y max(0, margin - d)^2, y = 1 for FAIL pairs.

    Args:
        distance: float (B,) embedding distances.
        labels: int (B,) 0 PASS (pull together) / 1 FAIL (push beyond the margin).
        margin: the margin.
    """
    y = labels.float()
    return ((1 - y) * distance.pow(2) + y * F.relu(margin - distance).pow(2)).mean()
