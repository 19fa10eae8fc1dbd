"""A small ProDASegmentor and its source/target batches."""
import torch
from mmengine.config import ConfigDict
from mmengine.structures import PixelData

from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmseg_uncert.models.segmentors import mmseg_scope

from helpers.members import member_model_cfg, save_member


def _proda(tmp_path, num_classes=5, dropout_ratio=0.0, **kwargs):
    warmup = save_member(str(tmp_path / 'warmup.pth'), seed=0, num_classes=num_classes)
    cfg = member_model_cfg(num_classes, dropout_ratio=dropout_ratio)
    cfg.update(type='ProDASegmentor', data_preprocessor=dict(
        cfg['data_preprocessor'], size=(64, 128)),
        pseudo_labeller=dict(model=member_model_cfg(num_classes), checkpoint=warmup),
        **kwargs)
    with mmseg_scope():
        model = MODELS.build(ConfigDict(cfg))
    model.load_state_dict(torch.load(warmup)['state_dict'])
    return model


def _batch(n=2, seed=0, labelled=True):
    g = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(n):
        s = SegDataSample(metainfo=dict(img_shape=(64, 128), pad_shape=(64, 128),
                                        ori_shape=(64, 128)))
        if labelled:
            s.gt_sem_seg = PixelData(data=torch.randint(0, 5, (1, 64, 128), generator=g))
        samples.append(s)
    return dict(inputs=[torch.randint(0, 256, (3, 64, 128), generator=g).byte()
                        for _ in range(n)], data_samples=samples)


def _cbst_model(tmp_path, portion=0.5):
    return _proda(tmp_path, rectify=False, structure_weight=0.0, regulariser_weight=0.0,
                  class_balanced_portion=portion)
