"""The Lightning module of contrastive fine-tuning: the SigLIP or CLIP loss over batches of image-caption pairs,
per-tower learning rates, the logit scale clamped after every step, retrieval validation, and WiSE-FT weights in
the checkpoints."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vfmkit.engine.module import TaskModule
from vfmkit.engine.optim import build_optimizer, build_scheduler, param_groups
from vfmkit.engine.taskdef import TaskDef
from vfmkit.models.clip import ClipModel
from vfmkit.tasks.clip.embeddings import evaluate_retrieval
from vfmkit.tasks.clip.losses import ContrastiveLoss, clamp_logit_scale, logit_scale_ceiling
from vfmkit.tasks.clip.spec import ClipSpec
from vfmkit.tasks.clip.wiseft import interpolate_weights

VAL_KEYS = ("t2i_mAP", "i2t_mAP", "i2t_R@1_any", "t2i_R@1_any")
"""Validation metrics logged every epoch (``val/t2i_mAP`` picks the best checkpoint, as TAO's AutoML objective)."""
WISE_FT_KEY = "wise_ft"
"""Top-level checkpoint key of the fine-tuned weights when the saved model holds WiSE-FT weights."""


class ClipModule(TaskModule):
    """Trains a :class:`~vfmkit.models.clip.ClipModel` with the loss of ``train.loss_type``.

    Training batches are :class:`~vfmkit.tasks.clip.data.PairCollate` dicts: ``images`` float (B, 3, R, R) in [0, 1],
    or (B, C) cached image features when the image backbone is frozen (its forward never runs); ``input_ids`` int64
    (B, L); ``dropped``, the samples left out as repeated captions (logged as ``train/dropped_fraction``, the share
    of the samples drawn in the epoch). Validation batches are ``(images or features, caption index, image index)``;
    at the end of the epoch every distinct caption of the val split is encoded and the retrieval metrics computed
    (fractions).

    With ``train.wise_ft.alpha`` < 1 the model saved in a checkpoint holds the WiSE-FT weights
    ``(1 - alpha) * pre-trained + alpha * fine-tuned`` (what evaluate, predict and export use), and the fine-tuned
    weights ride along under :data:`WISE_FT_KEY` so that a resumed run continues from them exactly.
    """

    def __init__(self, model: ClipModel, spec: ClipSpec, meta: dict, taskdef: TaskDef, on_features: bool = False):
        super().__init__(model, spec, meta, taskdef)
        self.on_features = on_features
        self.alpha = spec.train.wise_ft.alpha
        self.ceiling = logit_scale_ceiling(model)
        self.wise_ft_base = self._trainable_state() if self.alpha < 1 else {}
        self.loss_fn: ContrastiveLoss | None = None
        self._val_rows: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        """CPU copies of the model's trainable tensors (the pre-trained side of WiSE-FT)."""
        names = {name for name, p in self.model.named_parameters() if p.requires_grad}
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items() if k in names}

    def setup(self, stage: str) -> None:
        self.loss_fn = ContrastiveLoss(self.spec.train.loss_type, self.global_rank, self.trainer.world_size)

    def _image_embeddings(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, D) normalised embeddings of images, or of cached features when training on features."""
        if self.on_features:
            return F.normalize(self.model.visual.project(inputs), dim=-1)
        return self.model.encode_image(inputs)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        images = self._image_embeddings(batch["images"])
        texts = self.model.encode_text(batch["input_ids"])
        loss = self.loss_fn(images, texts, self.model.logit_scale, self.model.logit_bias)
        size = len(batch["input_ids"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        drawn = size + int(batch["dropped"])  # the epoch value is sum(dropped) / sum(drawn)
        dropped = float(batch["dropped"]) / drawn
        self.log("train/dropped_fraction", dropped, on_step=False, on_epoch=True, batch_size=drawn, sync_dist=True)
        self.log("train/logit_scale", self.model.logit_scale.detach().exp(), on_epoch=True, batch_size=size)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        clamp_logit_scale(self.model, self.ceiling)  # after the optimizer step of this batch

    def on_validation_epoch_start(self) -> None:
        self._val_rows = []

    def validation_step(self, batch, batch_idx: int) -> None:
        inputs, _, indices = batch
        self._val_rows.append((self._image_embeddings(inputs).float(), indices))

    def on_validation_epoch_end(self) -> None:
        embeddings = torch.cat([rows for rows, _ in self._val_rows])
        indices = torch.cat([index for _, index in self._val_rows])
        dim = embeddings.shape[1]
        embeddings = self.gather_cat(embeddings.reshape(-1)).reshape(-1, dim).cpu()
        indices = self.gather_cat(indices).cpu()
        pairs = self.trainer.val_dataloaders.dataset.pairs
        ordered = torch.zeros(len(pairs.images), dim)
        ordered[indices] = embeddings  # a distributed sampler may repeat samples: same index, same row
        metrics = evaluate_retrieval(self.model, pairs, 0, image_embeddings=ordered)
        self.log_metrics(metrics, VAL_KEYS, monitor="val/t2i_mAP")

    def configure_optimizers(self):
        """AdamW/SGD with the image tower at ``train.vision_lr`` and the text tower and logit scalars at
        ``train.text_lr`` (no weight decay on norms, biases, embeddings and the scalars); the schedule of
        ``train.scheduler`` steps per optimizer step."""
        train = self.spec.train
        skip = self.model.no_weight_decay()
        decay = train.optimizer.weight_decay
        vision = param_groups(self.model.vision_parameters(), train.vision_lr, decay, no_weight_decay=skip)
        text = param_groups(self.model.text_parameters(), train.text_lr, decay, no_weight_decay=skip)
        scalars = [(n, p) for n, p in self.model.named_parameters() if n in ("logit_scale", "logit_bias")]
        groups = vision + text + param_groups(scalars, train.text_lr, 0.0)
        optimizer = build_optimizer(groups, train.optimizer)
        total = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = max(1, math.ceil(total / train.epochs))
        scheduler = build_scheduler(optimizer, train.scheduler, steps_per_epoch, train.epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.alpha >= 1:
            return
        state = checkpoint["state_dict"]
        finetuned = {k: state[f"model.{k}"] for k in self.wise_ft_base}
        merged = interpolate_weights(self.wise_ft_base, {k: v.cpu() for k, v in finetuned.items()}, self.alpha)
        for key, value in merged.items():
            state[f"model.{key}"] = value.to(state[f"model.{key}"].device)
        checkpoint[WISE_FT_KEY] = {"alpha": self.alpha, "finetuned": finetuned}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get(WISE_FT_KEY)
        if saved:  # resuming: continue from the fine-tuned weights, not the interpolated ones
            for key, value in saved["finetuned"].items():
                checkpoint["state_dict"][f"model.{key}"] = value
