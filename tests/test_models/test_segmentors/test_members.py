"""build_member: members from config files and mmseg:: paths, with checkpoints."""
import torch
from mmengine.config import Config

from mmseg.registry import MODELS

from mmseg_uncert.models.segmentors import build_member, load_config, mmseg_scope

from helpers.tiny_config import PROJECT_CONFIG


def test_members_from_config_files_and_mmseg_paths(tmp_path):
    # a plain config path (the project's) and an mmseg:: path, with checkpoints
    cfg = Config.fromfile(PROJECT_CONFIG)
    torch.manual_seed(0)
    with mmseg_scope():
        own = MODELS.build(cfg.model)
    own_ckpt = str(tmp_path / 'own.pth')
    torch.save(dict(state_dict=own.state_dict()), own_ckpt)
    member, info = build_member(dict(config=PROJECT_CONFIG, checkpoint=own_ckpt),
                                'member 0')
    for key, value in own.state_dict().items():
        assert torch.equal(member.state_dict()[key], value), key
    mmseg_cfg = 'mmseg::fcn/fcn_r18-d8_4xb2-80k_cityscapes-512x1024.py'
    model_cfg = load_config(mmseg_cfg).model
    model_cfg.backbone.init_cfg = None
    torch.manual_seed(1)
    with mmseg_scope():
        reference = MODELS.build(model_cfg)
    ckpt = str(tmp_path / 'r18.pth')
    torch.save(dict(state_dict=reference.state_dict()), ckpt)
    loaded, info = build_member(dict(config=mmseg_cfg, checkpoint=ckpt), 'member 1')
    assert info['num_classes'] == 19 and info['source'] == mmseg_cfg
    key = 'decode_head.conv_seg.weight'
    assert torch.equal(loaded.state_dict()[key], reference.state_dict()[key])
    ensemble = MODELS.build(dict(type='EnsembleSegmentor', members=[
        dict(config=PROJECT_CONFIG, checkpoint=own_ckpt),
        dict(config=mmseg_cfg, checkpoint=ckpt)]))
    assert len(ensemble.members) == 2
