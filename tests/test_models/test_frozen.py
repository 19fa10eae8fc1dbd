"""Frozen children: they move with the model and stay frozen in every other way."""
import os.path as osp

import torch
import torch.distributed as dist
from mmengine.model import BaseModule, MMDistributedDataParallel
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.runner.checkpoint import load_state_dict as mmengine_load_state_dict
from torch import nn

from mmseg_uncert.models import FrozenChildren
from mmseg_uncert.models.segmentors import mmseg_scope

from helpers.device_checks import batch, build_segmentor, tensors_of


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
