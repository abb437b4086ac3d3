"""Fine-tuning a classifier: datasets and transforms, the Lightning module, atomic checkpoint files."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from ..data.images import SMALL_MODES, check_choice, prepare_image
from ..data.loading import ShardSampler
from ..data.sources import NO_LABEL, ImageSource
from ..errors import ConfigError, DatasetError
from ..io.atomic import atomic_write
from ..models.classifier import (
    CHECKPOINT_META_KEY,
    STUDY_ARCH,
    NormalizedClassifier,
    build_network,
    load_classifier,
    replace_head,
    wrap,
)
from ..models.weights import WeightsIdentity, load_checkpoint_file

OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("cosine", "step", "none")


def train_transform(crop: int) -> Callable:
    """Standard ImageNet-style augmentation: random resized crop and horizontal flip, to [0, 1] tensors."""
    return T.Compose([T.RandomResizedCrop(crop, antialias=True), T.RandomHorizontalFlip(), T.ToTensor()])


def _prepared_tensor(image: Image.Image, resize: int | None, crop: int | None, small: str) -> torch.Tensor:
    return TF.to_tensor(prepare_image(image, resize, crop, small))


def eval_transform(resize: int | None, crop: int | None, small: str = "upscale") -> Callable:
    """Exactly the preparation evaluate.py applies to clean images (resize, centre crop; dataset.small), to [0, 1]
    tensors."""
    # prepare_image upscales for any value but "pad": a misspelt mode must not silently mean upscale
    check_choice("dataset.small", small, SMALL_MODES)
    return partial(_prepared_tensor, resize=resize, crop=crop, small=small)  # picklable for spawned workers


class LabelledImages(Dataset):
    """(image tensor, label) pairs from an image source through a transform."""

    def __init__(self, source: ImageSource, transform: Callable) -> None:
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        record = self.source.records[index]
        return self.transform(self.source.load(record)), record.label


class ClassificationData(pl.LightningDataModule):
    """Train (augmented unless augment=False; shuffled) and val (deterministic) loaders over two image sources."""

    def __init__(self, train: ImageSource, val: ImageSource, crop: int, resize: int | None, batch_size: int = 32,
                 num_workers: int = 2, pin_memory: bool = False, small: str = "upscale", augment: bool = True) -> None:
        super().__init__()
        for name, source in (("train", train), ("val", val)):
            if not source.class_names or any(r.label == NO_LABEL for r in source.records):
                raise DatasetError(f"The {name} images have no class labels. Point dataset.root at a folder with "
                                   "one subfolder per class.")
        # augment=False: training images prepared as the val images are (the original study trained so)
        prepare = train_transform(crop) if augment else eval_transform(resize, crop, small)
        self.train_set = LabelledImages(train, prepare)
        self.val_set = LabelledImages(val, eval_transform(resize, crop, small))
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory

    def _rank_world(self) -> tuple[int, int]:
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)

    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                          pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0, **kwargs)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        if world == 1:
            return self._loader(self.train_set, shuffle=True)
        # Lightning calls set_epoch on it, so each epoch is shuffled differently.
        seed = int(torch.initial_seed()) % 2**31
        return self._loader(self.train_set, sampler=DistributedSampler(self.train_set, world, rank, seed=seed))

    def val_dataloader(self) -> DataLoader:
        # Every val image exactly once over all processes (no padding): the accuracy equals evaluate.py's.
        rank, world = self._rank_world()
        return self._loader(self.val_set, sampler=ShardSampler(len(self.val_set), rank, world))


@dataclass
class OptimSettings:
    """Optimizer and learning-rate schedule choices."""

    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    scheduler: str = "cosine"
    warmup_epochs: float = 1.0
    step_size: int = 10
    gamma: float = 0.1
    label_smoothing: float = 0.1

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer.name={self.optimizer!r} is not known. Use optimizer.name=sgd or adamw.")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"scheduler.name={self.scheduler!r} is not known. Use scheduler.name=cosine, step "
                              "or none.")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing={self.label_smoothing} is out of range. Use a value in [0, 1).")


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR factor: linear warm-up over `warmup` steps, then a cosine from 1 to 0 at `total` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_network_for(arch: str, num_classes: int, pretrained: bool, weights: str | None, seed: int = 0,
                      checkpoint: str | None = None, normalize: bool = True
                      ) -> tuple[NormalizedClassifier, WeightsIdentity | None]:
    """The network with a fresh `num_classes` head: from a weights file, torchvision's weights, or untrained.

    arch=study_resnet18 is the study's ResNet_Model: its ResNet_Module starts from torchvision's resnet18
    weights (`weights`, default IMAGENET1K_V1, as the study's models.py), or from a study/train.py checkpoint.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if arch == STUDY_ARCH and not checkpoint:
            net, start = build_network(STUDY_ARCH, num_classes), None
            if pretrained:
                body = load_classifier("resnet18", weights=weights or "IMAGENET1K_V1", pretrained=True)
                body.model.net.fc = torch.nn.Identity()
                net.ResNet_Module.load_state_dict(body.model.net.state_dict())
                start = body.weights
            return NormalizedClassifier(net, normalize=normalize), start
        if checkpoint or (pretrained and weights):
            base = load_classifier(arch, weights=weights, checkpoint=checkpoint, pretrained=True, normalize=normalize)
            return wrap(replace_head(base.model.net, num_classes), arch, normalize), base.weights
        return wrap(build_network(arch, num_classes), arch, normalize), None


class ClassifierModule(pl.LightningModule):
    """Cross-entropy fine-tuning with top-1/top-5 validation accuracy; checkpoints carry what evaluate needs."""

    def __init__(self, classifier: NormalizedClassifier, class_names: list[str], arch: str, optim: OptimSettings,
                 meta: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.classifier = classifier
        self.class_names = list(class_names)
        self.arch = arch
        self.optim = optim
        self.meta = dict(meta or {})
        n = len(self.class_names)
        self.val_top1 = MulticlassAccuracy(num_classes=n, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes=n, top_k=min(5, n), average="micro")
        self.train_top1 = MulticlassAccuracy(num_classes=n, top_k=1, average="micro")
        self.val_loss = MeanMetric()  # weighted by images, synced over processes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.optim.label_smoothing)
        self.train_top1(logits, y)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, sync_dist=True, batch_size=len(y))
        self.log("train/acc_top1", self.train_top1, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        # Plain cross-entropy: the checkpoint choice should not depend on the smoothing setting.
        self.val_loss(F.cross_entropy(logits, y, reduction="none"))
        self.val_top1(logits, y)
        self.val_top5(logits, y)
        self.log("val/loss", self.val_loss, prog_bar=True, on_epoch=True, batch_size=len(y))
        self.log("val/acc_top1", self.val_top1, prog_bar=True, on_epoch=True, batch_size=len(y))
        self.log("val/acc_top5", self.val_top5, on_epoch=True, batch_size=len(y))

    def configure_optimizers(self) -> Any:
        o = self.optim
        params = self.parameters()
        if o.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                                        weight_decay=o.weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
        if o.scheduler == "none":
            return optimizer
        if o.scheduler == "step":
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=o.step_size, gamma=o.gamma)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        warmup = min(total, int(round(o.warmup_epochs * per_epoch)))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, warmup, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items()
                   if k.startswith("val/") and torch.is_tensor(v) and v.numel() == 1}
        # Plain lists, strings and numbers only: evaluate.py reads this with torch.load(weights_only=True).
        checkpoint[CHECKPOINT_META_KEY] = {
            **self.meta, "arch": self.arch, "class_names": list(self.class_names),
            "normalize": bool(self.classifier.normalize),  # evaluate.py must feed the same input (it checks)
            "epoch": int(self.current_epoch), "metrics": metrics,
        }


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint files written to a temporary file beside the target, fsynced and renamed into place, and read
    back through the project's safe reader (torch.load(weights_only=True)): a checkpoint is untrusted input, so
    one that carries code is refused, never unpickled.

    Lightning's own writer commits through a temporary file in the system temp folder and moves it,
    which copies (non-atomically) when that folder is on another file system.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        atomic_write(path, lambda fh: torch.save(checkpoint, fh))

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint_file(path, "ckpt_path", allow=(argparse.Namespace,))
