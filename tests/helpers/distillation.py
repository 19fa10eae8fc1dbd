"""Small distillation students (DualHead, DirichletHead), a distiller of
saved members, and a labelled batch."""
import torch
from mmengine.config import ConfigDict
from mmengine.structures import PixelData

from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmseg_uncert.models.segmentors import mmseg_scope

from helpers.members import member_model_cfg, member_specs


def _dirichlet_cfg(num_classes: int = 5) -> dict:
    cfg = member_model_cfg(num_classes)
    cfg['decode_head'] = dict(type='DirichletHead', head=cfg['decode_head'])
    return cfg


def _student_cfg(num_classes: int = 5, names=('std', )) -> dict:
    cfg = member_model_cfg(num_classes)
    head = cfg['decode_head']
    cfg['decode_head'] = dict(type='DualHead', head=head, uncertainty_names=names,
                              loss_uncertainty=dict(type='UncertaintyRegressionLoss',
                                                    value_range=(0.0, 0.5)))
    return cfg


def _distiller(tmp_path, **kwargs):
    cfg = _student_cfg()
    cfg.update(type='EnsembleDistiller', teacher=member_specs(tmp_path, 2), **kwargs)
    with mmseg_scope():
        torch.manual_seed(0)
        model = MODELS.build(ConfigDict(cfg))
    model.init_weights()
    return model


def _batch(seed: int = 0, n: int = 2):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, 3, 64, 128, generator=g)
    samples = []
    for _ in range(n):
        label = torch.randint(0, 5, (1, 64, 128), generator=g)
        label[:, :8] = 255
        s = SegDataSample(metainfo=dict(ori_shape=(64, 128), img_shape=(64, 128),
                                        pad_shape=(64, 128), padding_size=[0, 0, 0, 0]))
        s.gt_sem_seg = PixelData(data=label)
        samples.append(s)
    return inputs, samples
