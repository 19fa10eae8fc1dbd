"""A held-out split's seg logits and labels, cached on disk image by image,
for fitting post-hoc calibration."""
from __future__ import annotations

import os
import os.path as osp
from typing import Iterator, NamedTuple

import torch
from torch import Tensor


class CalibrationImage(NamedTuple):
    """One cached image: logits (C, H, W) float32, label (H, W) int64, and
    the network's input image at the logits' size (3, H, W) or None."""
    logits: Tensor
    label: Tensor
    image: Tensor | None


class CalibrationSet:
    """Seg logits, labels (and images) of a held-out split, one file per image.

    Fitting a calibrator takes many passes over the split (Newton steps,
    L-BFGS evaluations, epochs); running the segmentor for each would cost a
    forward pass of every model every time, and keeping the logits in memory
    would grow with the split (Cityscapes val: 500 × 19 × 1024 × 2048
    float32 = 80 GB). So each image's logits go to a file in ``directory``
    when added and are read back one image at a time: memory holds one
    image, the disk the split.

    Args:
        directory: where the files go: a new or empty folder (it is not
            emptied, so that nothing of the user's is deleted).
        name: the split, named in errors (e.g. ``'val'``).
        ignore_index: the label of pixels that do not count.
    """

    def __init__(self, directory: str, name: str, ignore_index: int = 255) -> None:
        os.makedirs(directory, exist_ok=True)
        if os.listdir(directory):
            raise FileExistsError(f'CalibrationSet: {directory} is not empty; give a new '
                                  f'or empty folder for the cache of split {name!r}')
        self.directory, self.name, self.ignore_index = directory, name, ignore_index
        self.num_images = 0
        self.num_valid = 0
        self.num_classes: int | None = None

    def add(self, logits: Tensor, label: Tensor, image: Tensor | None = None,
            img_path: str = '<unknown image>') -> None:
        """Cache one image: ``logits`` (C, H, W), ``label`` (H, W) or
        (1, H, W), ``image`` (3, H, W) at the logits' size."""
        label = label.reshape(label.shape[-2:]).long().cpu()
        if tuple(logits.shape[1:]) != tuple(label.shape):
            raise ValueError(f'{img_path}: seg_logits of size {tuple(logits.shape[1:])}, '
                             f'label of size {tuple(label.shape)}')
        if self.num_classes is None:
            self.num_classes = logits.shape[0]
        elif logits.shape[0] != self.num_classes:
            raise ValueError(f'{img_path}: {logits.shape[0]} classes, earlier images '
                             f'of split {self.name!r} had {self.num_classes}')
        valid = label != self.ignore_index
        outside = valid & ((label < 0) | (label >= self.num_classes))
        if outside.any():
            raise ValueError(
                f'{img_path}: labels {label[outside].unique().tolist()[:10]} outside '
                f'[0, {self.num_classes}) that are not ignore_index '
                f'({self.ignore_index}); set ignore_index to your data set\'s')
        torch.save(dict(logits=logits.detach().float().cpu(), label=label,
                        image=None if image is None else image.detach().float().cpu()),
                   osp.join(self.directory, f'{self.num_images:06d}.pt'))
        self.num_images += 1
        self.num_valid += int(valid.sum())

    def check_valid(self) -> None:
        """A split without any valid pixel cannot be fitted on."""
        if self.num_valid == 0:
            raise ValueError(
                f'calibration split {self.name!r} has no valid pixel ({self.num_images} '
                f'images, every label is ignore_index {self.ignore_index} or there is no '
                f'image): fit on a labelled held-out split')

    def __len__(self) -> int:
        return self.num_images

    def __iter__(self) -> Iterator[CalibrationImage]:
        for k in range(self.num_images):
            yield self.image(k)

    def image(self, k: int) -> CalibrationImage:
        """The ``k``-th cached image."""
        saved = torch.load(osp.join(self.directory, f'{k:06d}.pt'), weights_only=True)
        return CalibrationImage(saved['logits'], saved['label'], saved['image'])

    def valid_pixels(self) -> Iterator[tuple[Tensor, Tensor]]:
        """Per image: the valid pixels' logits (N, C) and labels (N,)."""
        for item in self:
            valid = item.label != self.ignore_index
            yield item.logits.permute(1, 2, 0)[valid], item.label[valid]
