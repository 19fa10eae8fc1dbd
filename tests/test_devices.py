"""Frozen children, precision and placement without a GPU: every segmentor
trains and predicts after ``.to(torch.float64)`` and under CPU autocast;
frozen models move with the model and stay frozen in every other way."""
import os.path as osp

import pytest
import torch
import torch.distributed as dist
from mmengine.model import BaseModule, MMDistributedDataParallel
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.runner.checkpoint import load_state_dict as mmengine_load_state_dict
from torch import nn

from mmseg_uncert.models import FrozenChildren
from mmseg_uncert.models.segmentors import mmseg_scope

from helpers.device_checks import (INFERENCE_ONLY, SEGMENTORS, batch,
                                   build_segmentor, registered_segmentors,
                                   run_steps, tensors_of)

CPU = torch.device('cpu')


class Teacher(BaseModule):
    """A small frozen model with every kind of state: weights, BN statistics
    and dropout; its init_cfg would zero its convolution."""

    def __init__(self) -> None:
        super().__init__(init_cfg=dict(type='Constant', layer='Conv2d', val=0.0))
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.bn(self.conv(x)))


class Student(FrozenChildren, BaseModule):

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        torch.manual_seed(0)
        self.add_frozen('teacher', Teacher())

    def forward(self, x):
        return self.conv(x), self.teacher(x)


def test_every_registered_segmentor_is_checked():
    assert registered_segmentors() == set(SEGMENTORS)


@pytest.mark.parametrize('name', SEGMENTORS)
def test_float64_training_and_test_steps(name, tmp_path):
    """After .to(float64) every parameter and buffer is float64, frozen
    models' included, the losses are float64 and the predictions follow."""
    out = run_steps(name, str(tmp_path), CPU, dtype=torch.float64)
    assert out['samples'][0].seg_logits.data.dtype == torch.float64
    if name not in INFERENCE_ONLY:
        assert out['losses']['loss'].dtype == torch.float64


@pytest.mark.parametrize('name', [n for n in SEGMENTORS if n not in INFERENCE_ONLY])
def test_mixed_precision_steps_keep_losses_in_float32(name, tmp_path):
    """Under CPU autocast (bfloat16) the losses that need float32 get it and
    stay finite, near the float32 step's (the network itself runs in
    bfloat16, about 3 significant digits); the weights stay float32."""
    amp = run_steps(name, str(tmp_path), CPU, amp_dtype=torch.bfloat16)
    full = run_steps(name, str(tmp_path), CPU)
    assert amp['losses']['loss'].dtype == torch.float32
    for key, value in full['losses'].items():
        if 'loss' in key:
            assert amp['losses'][key].item() == pytest.approx(
                value.item(), rel=0.1, abs=1e-2), key


def test_float64_loss_equals_float32_loss(tmp_path):
    """The same distillation step in float64 and float32 agrees: nothing is
    computed at a precision other than the model's."""
    values = {}
    for dtype in (torch.float32, torch.float64):
        model = build_segmentor('EnsembleDistiller', str(tmp_path)).to(dtype=dtype)
        model.train()
        data = model.data_preprocessor(batch(3), True)
        torch.manual_seed(0)
        values[dtype] = {k: v.item() for k, v in model(**data, mode='loss').items()
                         if 'loss' in k}
    for key, value in values[torch.float64].items():
        assert values[torch.float32][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_frozen_child_moves_and_stays_frozen():
    model = Student().double()
    assert model.teacher.conv.weight.dtype == torch.float64
    assert model.teacher.bn.running_mean.dtype == torch.float64
    model.train()
    assert model.training and not model.teacher.training
    assert all(not m.training for m in model.teacher.modules())
    assert all(not p.requires_grad for p in model.teacher.parameters())
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    before = model.teacher.bn.running_mean.clone()
    _, a = model(x)
    _, b = model(x)
    assert torch.equal(a, b)  # dropout off
    assert torch.equal(model.teacher.bn.running_mean, before)  # BN fixed


def test_frozen_child_is_not_in_checkpoints_and_keeps_its_weights():
    model = Student()
    state = model.state_dict()
    assert set(state) == {'conv.weight', 'conv.bias'}
    teacher = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    other = Student()
    with torch.no_grad():
        other.conv.weight.add_(1.0)
    # a student-only checkpoint loads strictly, by torch and by mmengine
    model.load_state_dict(other.state_dict(), strict=True)
    assert torch.equal(model.conv.weight, other.conv.weight)
    mmengine_load_state_dict(model, state, strict=True)
    assert torch.equal(model.conv.weight, state['conv.weight'])
    # a checkpoint that holds a teacher cannot overwrite the frozen one
    foreign = dict(state, **{'teacher.conv.weight': torch.zeros(4, 3, 1, 1)})
    model.load_state_dict(foreign, strict=True)
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, teacher[key]), key


def test_frozen_child_is_not_reinitialised():
    model = Student()
    weight = model.teacher.conv.weight.clone()
    model.init_weights()
    assert torch.equal(model.teacher.conv.weight, weight)
    assert weight.abs().sum() > 0  # its init_cfg (zeros) did not run


def test_frozen_models_are_left_out_of_the_optimizer(tmp_path):
    model = build_segmentor('EnsembleDistiller', str(tmp_path))
    teacher = {id(p) for p in model.teacher.parameters()}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    cfg = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01))
    with mmseg_scope():  # as in a runner of an mmseg config
        ours = build_optim_wrapper(
            model, dict(cfg, constructor='TrainableOptimWrapperConstructor'))
        # mmengine's own constructor hands the frozen weights to the optimizer
        default = build_optim_wrapper(model, cfg)
        # ours also with per-parameter settings
        paramwise = build_optim_wrapper(model, dict(
            cfg, constructor='TrainableOptimWrapperConstructor',
            paramwise_cfg=dict(norm_decay_mult=0.0)))
    held = {id(p) for g in ours.optimizer.param_groups for p in g['params']}
    assert held == trainable and not held & teacher
    assert teacher <= {id(p) for g in default.optimizer.param_groups for p in g['params']}
    held = {id(p) for g in paramwise.optimizer.param_groups for p in g['params']}
    assert held == trainable
    # an optimizer with per-parameter state from the start saves its state
    with mmseg_scope():
        adagrad = build_optim_wrapper(model, dict(
            optimizer=dict(type='Adagrad', lr=1e-2),
            constructor='TrainableOptimWrapperConstructor'))
    assert len(adagrad.optimizer.state_dict()['state']) == len(trainable)


def test_proda_frozen_children_exist_before_any_move_or_wrap(tmp_path):
    """The warm-up model and the prototype bank are children from the
    model's construction, so DDP built afterwards ignores both."""
    model = build_segmentor('ProDASegmentor', str(tmp_path))
    ignored = set(model._ddp_params_and_buffers_to_ignore)
    assert {f'pseudo_labeller.{k}' for k in tensors_of(model.pseudo_labeller)} <= ignored
    assert {f'prototype_bank.{k}' for k in tensors_of(model.prototype_bank)} <= ignored
    assert 'prototype_bank.prototypes' in ignored
    assert not any(k.startswith(('pseudo_labeller', 'prototype_bank'))
                   for k in model.state_dict())


def test_ddp_ignores_frozen_models(tmp_path):
    """DDP (gloo, one process) neither tracks the teacher's parameters nor
    broadcasts its buffers, and a step with find_unused_parameters=False
    raises no unused-parameter error."""
    model = build_segmentor('EnsembleDistiller', str(tmp_path))
    frozen = {f'teacher.{k}' for k in tensors_of(model.teacher)}
    assert set(model._ddp_params_and_buffers_to_ignore) == frozen
    dist.init_process_group('gloo', init_method=f'file://{osp.join(tmp_path, "pg")}',
                            rank=0, world_size=1)
    try:
        ddp = MMDistributedDataParallel(model, device_ids=None, broadcast_buffers=True,
                                        find_unused_parameters=False)
        assert frozen <= set(ddp.parameters_to_ignore)
        broadcast = {id(b) for b in ddp.modules_buffers}
        assert not broadcast & {id(b) for b in model.teacher.buffers()}
        assert broadcast  # the student's BN statistics are still broadcast
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                                    lr=0.01)
        for step in range(2):  # a second step would fail on unreduced grads
            log = ddp.train_step(batch(step), OptimWrapper(optimizer))
            assert torch.isfinite(log['loss'])
    finally:
        dist.destroy_process_group()
