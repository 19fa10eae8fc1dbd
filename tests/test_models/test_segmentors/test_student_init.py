"""student_init: a distillation student starts from a member's checkpoint."""
import copy

import pytest
import torch
from mmengine.config import ConfigDict

from mmseg.registry import MODELS

from mmseg_uncert.models.segmentors import mmseg_scope

from helpers.distillation import _dirichlet_cfg, _student_cfg
from helpers.members import member_specs, save_member


def test_student_init_loads_into_a_dirichlet_head(tmp_path):
    specs = member_specs(tmp_path, 2)
    cfg = _dirichlet_cfg()
    cfg.update(type='EnsembleDistiller', teacher=specs, student_init=specs[1]['checkpoint'])
    with mmseg_scope():
        model = MODELS.build(ConfigDict(cfg))
    model.init_weights()
    member = torch.load(specs[1]['checkpoint'], map_location='cpu',
                        weights_only=False)['state_dict']
    own = model.state_dict()
    for key, value in member.items():
        assert torch.equal(own[key.replace('decode_head.', 'decode_head.head.', 1)], value)


def test_student_starts_from_a_member_checkpoint(tmp_path):
    """student_init: backbone and wrapped head take the member's weights
    (decode_head.X -> decode_head.head.X), the uncertainty branch keeps its
    own; a checkpoint of another architecture is refused, naming weights."""
    specs = member_specs(tmp_path, 2)
    cfg = _student_cfg()
    cfg.update(type='EnsembleDistiller', teacher=specs, student_init=specs[1]['checkpoint'])
    with mmseg_scope():
        torch.manual_seed(0)
        model = MODELS.build(ConfigDict(cfg))
    branch_before = copy.deepcopy(model.decode_head.uncertainty_branch.state_dict())
    model.init_weights()
    member = torch.load(specs[1]['checkpoint'], map_location='cpu',
                        weights_only=False)['state_dict']
    own = model.state_dict()
    for key, value in member.items():
        ours = key.replace('decode_head.', 'decode_head.head.', 1)
        assert torch.equal(own[ours], value), key
    for key, value in model.decode_head.uncertainty_branch.state_dict().items():
        assert torch.equal(value, branch_before[key]), key
    wrong_ckpt = save_member(str(tmp_path / 'six.pth'), seed=3, num_classes=6)
    cfg.update(student_init=wrong_ckpt)
    with mmseg_scope():
        model = MODELS.build(ConfigDict(cfg))
    with pytest.raises(KeyError, match=r"six\.pth is not a checkpoint of the student's "
                                       r"architecture.*decode_head\.conv_seg"):
        model.init_weights()
