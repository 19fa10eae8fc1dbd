"""PrototypeHook: prototypes reduced over processes, updated after the step."""
import copy

import pytest
import torch
from mmengine.logging import MessageHub
from torch import nn

from mmseg_uncert.engine import PrototypeHook
from mmseg_uncert.models import PrototypeBank, class_feature_sums

from conftest import run_tool
from helpers.proda import _batch, _proda


def test_hook_reduces_over_two_gloo_processes(tmp_path):
    out = str(tmp_path / 'protos')
    run_tool(['-m', 'torch.distributed.run', '--nproc_per_node=2',
              '--master_port=29659', 'tests/helpers/prototype_ddp.py', out])
    a = torch.load(out + '_0.pt')
    b = torch.load(out + '_1.pt')
    for key in ('initial', 'prototypes', 'share'):
        assert torch.equal(a[key], b[key]), key
    # class 0: rank 0's pixel (1, 10); class 1: ranks 0 and 1, (1.5, 15); class 2: (2, 20)
    assert a['initial'].tolist() == [[1.0, 10.0], [1.5, 15.0], [2.0, 20.0]]
    assert a['initialised'].all()
    # then one image per rank, in rank order: rank 0's (class 0, value 3),
    # rank 1's (class 0, value 5); 2 images an iteration, half-life 1
    # iteration: λ = 2^(-1/2) per image
    lam = 0.5 ** 0.5
    first = lam * 1.0 + (1 - lam) * 3.0
    assert a['prototypes'][0, 0].item() == pytest.approx(lam * first + (1 - lam) * 5.0)
    assert a['prototypes'][1:].tolist() == [[1.5, 15.0], [2.0, 20.0]]
    assert a['share'].tolist() == pytest.approx([0.5, 1.0, 1.0])


def test_hook_rejects_prototypes_of_another_width():
    hook = PrototypeHook()
    hook.bank = PrototypeBank(3, 8, nn.Identity())
    state = dict(prototypes=torch.zeros(3, 16), initialised=torch.zeros(3, dtype=torch.bool),
                 momentum_network={})
    with pytest.raises(ValueError, match=r'\(3, 16\).*\(3, 8\)'):
        hook.load_state(state)


def test_half_lives_and_minimum_are_checked():
    for key in ('momentum_half_life', 'prototype_half_life'):
        with pytest.raises(ValueError, match=f'{key} must be > 0 iterations, got 0'):
            PrototypeHook(**{key: 0})
    with pytest.raises(ValueError, match='min_pixels must be >= 1'):
        PrototypeHook(min_pixels=0)
    # ProDA's rates: m = 0.999 is a half-life of 693 iterations
    assert PrototypeHook().momentum == pytest.approx(0.999, abs=2e-6)


def test_hook_updates_after_the_optimizer_step(tmp_path):
    """The momentum update uses the weights the optimizer just wrote; the
    prototypes then move image by image, and the movement is logged."""
    model = _proda(tmp_path)
    hook = PrototypeHook(momentum_half_life=2, prototype_half_life=0.5, min_pixels=3)
    hook.bank = model.prototype_bank
    hook.bank.restart(model.network(), hook.momentum)
    start = torch.randn(hook.bank.prototypes.shape,
                        generator=torch.Generator().manual_seed(0))
    hook.initial_update(start.double(), torch.ones(5, dtype=torch.float64))
    before = {k: v.clone() for k, v in hook.bank.momentum_network.module.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    batch = model.data_preprocessor(dict(source=_batch(seed=1),
                                         target=_batch(seed=2, labelled=False)), True)
    sum(v for k, v in model(**batch, mode='loss').items() if 'loss' in k).backward()
    optimizer.step()
    feature, label, valid = hook.bank.pending

    class Runner:
        pass
    runner = Runner()
    runner.model = model
    runner.message_hub = MessageHub.get_instance('prototype_hook_test')
    hook.after_train_iter(runner, 0)
    after = hook.bank.momentum_network.module.state_dict()
    current = model.network().state_dict()
    name = 'decode_head.conv_seg.weight'
    m = 0.5 ** (1 / 2)
    assert not torch.equal(current[name], before[name])
    assert torch.allclose(after[name], m * before[name] + (1 - m) * current[name],
                          atol=1e-6)
    # by hand, image after image: λ = 2^(-1/(0.5 * 2 images))
    lam = 0.25 ** 0.5
    expected = start.double().clone()
    updates = torch.zeros(5)
    for i in range(feature.shape[0]):
        for k in range(5):
            where = (label[i] == k) & valid[i]
            if where.sum() >= 3:
                mean = feature[i][:, where].double().mean(1)
                expected[k] = lam * expected[k] + (1 - lam) * mean
                updates[k] += 1
    assert updates.sum() > 0
    assert torch.allclose(hook.bank.prototypes.double(), expected, atol=1e-5)
    assert hook.bank.pending is None
    keys = ('momentum_start_share', 'prototype_start_share', 'prototype_drift')
    logged = {k: runner.message_hub.get_scalar(f'train/{k}').current() for k in keys}
    assert logged['momentum_start_share'] == pytest.approx(m)
    assert logged['prototype_start_share'] == pytest.approx(
        (lam ** updates.double()).mean().item())
    drift = (expected - start.double()).norm(dim=1) / start.double().norm(dim=1)
    assert logged['prototype_drift'] == pytest.approx(drift.mean().item(), rel=1e-5)
    # the movement survives a checkpoint
    state = hook.state()
    restored = PrototypeHook(momentum_half_life=2, prototype_half_life=0.5)
    restored.bank = PrototypeBank(5, hook.bank.prototypes.shape[1],
                                  copy.deepcopy(hook.bank.momentum_network))
    restored.load_state(state)
    assert restored.movement() == pytest.approx(hook.movement())
