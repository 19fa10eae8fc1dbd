"""The Cityscapes distillation config trained with mim, as a user runs it.

``mim train mmseg configs/distill_mbv3_cityscapes.py`` from a folder holding
``checkpoints/`` and ``data/cityscapes/``, the README's command.
"""
import glob
import json
import math
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from conftest import ROOT, run_tool
from helpers.members import save_config_model
from helpers.tool_runs import _mim
from mmseg_uncert.datasets.synthetic_streets import SceneSpec, generate

CONFIG = osp.join(ROOT, 'configs', 'distill_mbv3_cityscapes.py')
CROP = (128, 256)
LOSSES = ('decode.loss_ce', 'distill.loss_kd', 'distill.loss_uncertainty',
          'distill.loss_pairwise')


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU path')
def test_mim_trains_the_cityscapes_distillation_config(tmp_path):
    """2 iterations of the shipped config through ``mim train`` on generated
    Cityscapes-layout images, with its two mmseg DeepLabV3+ teachers
    (R50-D8, R101-D8) saved from random initialisation at the config's own
    checkpoint paths. Checked: both teacher checkpoints are loaded from
    there and nothing is downloaded; the scalars log every loss of the
    recipe, finite, the total their sum, the CE of the fresh student near
    log 19; ``iter_2.pth`` is at iteration 2 with the Cityscapes classes,
    holds the student only (backbone and DualHead, no ``teacher.``), its
    optimizer holds exactly the student's parameters (the frozen teacher
    left out), and backbone, head and uncertainty branch moved between
    iterations 1 and 2.

    Overridden, and nothing else: crop size 128x256 instead of 512x1024
    (RandomCrop and the data preprocessor's size), no ImageNet pretrained
    student (it would download), the teacher in float32, 2 iterations,
    no dataloader workers, validation off, a log line and a checkpoint
    every iteration, seed 0.
    """
    mim = _mim()
    cfg = Config.fromfile(CONFIG)
    # what the overrides below replace is what the config says
    pipeline = cfg.train_dataloader.dataset.pipeline
    crop = [t.type for t in pipeline].index('RandomCrop')
    assert pipeline[crop].crop_size == cfg.model.data_preprocessor.size == (512, 1024)
    assert cfg.model.pretrained.startswith('open-mmlab://')
    members = cfg.model.teacher.members
    assert [m.config.split('/')[-1] for m in members] == [
        'deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.py',
        'deeplabv3plus_r101-d8_4xb2-80k_cityscapes-512x1024.py']

    # the user's folder: teacher checkpoints and data where the config looks
    for seed, member in enumerate(members):
        assert not osp.isabs(member.checkpoint)
        (tmp_path / osp.dirname(member.checkpoint)).mkdir(parents=True, exist_ok=True)
        save_config_model(member.config, str(tmp_path / member.checkpoint), seed=seed)
    data_root = cfg.train_dataloader.dataset.data_root
    assert data_root == 'data/cityscapes/'
    generate(str(tmp_path / data_root), {'train': 2}, seed=0,
             spec=SceneSpec(256, 512), workers=1)

    proc = run_tool([
        mim, 'train', 'mmseg', CONFIG, '--cfg-options',
        'model.pretrained=None',
        # on CPU autocast means bfloat16, and this CPU's bfloat16
        # convolutions are ~100x slower than float32 (a 512-channel 3x3
        # convolution: 6.2 s against 0.06 s); the flag is for GPUs
        'model.teacher_autocast=False',
        f'model.data_preprocessor.size={CROP}',
        f'train_dataloader.dataset.pipeline.{crop}.crop_size={CROP}',
        'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
        'train_cfg.max_iters=2',
        'val_cfg=None', 'val_dataloader=None', 'val_evaluator=None',
        'default_hooks.logger.interval=1', 'default_hooks.checkpoint.interval=1',
        'randomness.seed=0'], cwd=str(tmp_path), python=False)
    log = proc.stdout + proc.stderr
    for member in members:
        assert f'by local backend from path: {member.checkpoint}' in log
    assert 'open-mmlab://' not in log and 'Downloading' not in log

    # mmseg's default work_dir, relative to where mim ran
    work_dir = tmp_path / 'work_dirs' / 'distill_mbv3_cityscapes'
    scalars = glob.glob(str(work_dir / '*' / 'vis_data' / 'scalars.json'))
    assert len(scalars) == 1
    logged = [json.loads(line) for line in open(scalars[0])]
    assert [s['iter'] for s in logged] == [1, 2]
    for s in logged:
        assert all(math.isfinite(s[k]) for k in LOSSES), s
        # the recipe's losses and no other
        assert s['loss'] == pytest.approx(sum(s[k] for k in LOSSES), rel=1e-5)
        assert s['distill.loss_kd'] >= 0 and s['distill.loss_uncertainty'] > 0
    # a fresh student (classifier initialised at std 0.01) is near uniform
    assert logged[0]['decode.loss_ce'] == pytest.approx(math.log(19), abs=0.3)

    first = torch.load(work_dir / 'iter_1.pth', map_location='cpu', weights_only=False)
    ckpt = torch.load(work_dir / 'iter_2.pth', map_location='cpu', weights_only=False)
    assert ckpt['meta']['iter'] == 2 and ckpt['meta']['seed'] == 0
    classes = ckpt['meta']['dataset_meta']['classes']
    assert len(classes) == 19 and classes[0] == 'road' and classes[-1] == 'bicycle'
    state = ckpt['state_dict']
    assert {k.split('.')[0] for k in state} == {'backbone', 'decode_head'}
    assert not any(k.startswith('teacher') for k in state)
    # the student's parameters: all but BN statistics and the loss's buffers
    params = [k for k in state
              if not k.endswith(('running_mean', 'running_var', 'num_batches_tracked'))
              and not k.startswith('decode_head.loss_')]
    optimizer = ckpt['optimizer']
    momenta = [s['momentum_buffer'] for s in optimizer['state'].values()]
    assert len(optimizer['param_groups'][0]['params']) == len(params)
    assert (sorted(m.numel() for m in momenta)
            == sorted(state[k].numel() for k in params))
    for part in ('backbone.', 'decode_head.head.', 'decode_head.uncertainty_branch.'):
        keys = [k for k in params if k.startswith(part)]
        assert keys and any(not torch.equal(first['state_dict'][k], state[k])
                            for k in keys), part
