"""Inputs and data samples for the ensemble and MC-dropout tests, and
members of mixed architectures from mmseg's configs."""
from __future__ import annotations

import torch

from mmseg.structures import SegDataSample

from mmseg_uncert.workflows.head_coverage import bare_model_cfg


def _inputs(seed: int = 0, shape=(2, 3, 32, 64)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _samples(n: int, ori_shape=(48, 96), pad_shape=(32, 64)) -> list:
    return [SegDataSample(metainfo=dict(ori_shape=ori_shape, img_shape=pad_shape,
                                        pad_shape=pad_shape,
                                        padding_size=[0, 0, 0, 0]))
            for _ in range(n)]


def _mixed_members() -> list[dict]:
    """PSPNet, DeepLabV3+, SegFormer and OCRNet (a cascade) from mmseg's
    configs, random weights, 19 Cityscapes classes."""
    paths = ['pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py',
             'deeplabv3plus/deeplabv3plus_r18-d8_4xb2-80k_cityscapes-512x1024.py',
             'segformer/segformer_mit-b0_8xb1-160k_cityscapes-1024x1024.py',
             'ocrnet/ocrnet_hr18s_4xb2-40k_cityscapes-512x1024.py']
    return [dict(model=bare_model_cfg(p), checkpoint=None) for p in paths]
