"""PrototypeHook: prototypes reduced over processes, updated after the step."""
import pytest
import torch
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
    assert torch.equal(a['prototypes'], b['prototypes'])
    # class 0: rank 0's pixel (1, 10); class 1: ranks 0 and 1, (1.5, 15); class 2: (2, 20)
    assert a['prototypes'].tolist() == [[1.0, 10.0], [1.5, 15.0], [2.0, 20.0]]
    assert a['initialised'].all()


def test_hook_rejects_prototypes_of_another_width():
    hook = PrototypeHook()
    hook.bank = PrototypeBank(3, 8, nn.Identity())
    state = dict(prototypes=torch.zeros(3, 16), initialised=torch.zeros(3, dtype=torch.bool),
                 momentum_network={})
    with pytest.raises(ValueError, match=r'\(3, 16\).*\(3, 8\)'):
        hook.load_state(state)


def test_hook_updates_after_the_optimizer_step(tmp_path):
    """The momentum update uses the weights the optimizer just wrote."""
    model = _proda(tmp_path)
    hook = PrototypeHook(momentum=0.9, decay=0.5)
    hook.bank = model.prototype_bank
    hook.bank.restart(model.network(), hook.momentum)
    hook.bank.prototypes.normal_()
    hook.bank.initialised.fill_(True)
    before = {k: v.clone() for k, v in hook.bank.momentum_network.module.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    batch = model.data_preprocessor(dict(source=_batch(seed=1),
                                         target=_batch(seed=2, labelled=False)), True)
    sum(v for k, v in model(**batch, mode='loss').items() if 'loss' in k).backward()
    optimizer.step()
    protos = hook.bank.prototypes.clone()
    feature, label, valid = hook.bank.pending
    sums, counts = class_feature_sums(feature, label, 5, valid)

    class Runner:
        pass
    runner = Runner()
    runner.model = model
    hook.after_train_iter(runner, 0)
    after = hook.bank.momentum_network.module.state_dict()
    current = model.network().state_dict()
    name = 'decode_head.conv_seg.weight'
    assert not torch.equal(current[name], before[name])
    assert torch.allclose(after[name], 0.9 * before[name] + 0.1 * current[name], atol=1e-6)
    present = counts > 0
    mean = (sums[present] / counts[present, None]).float()
    assert torch.allclose(hook.bank.prototypes[present], 0.5 * protos[present] + 0.5 * mean,
                          atol=1e-5)
    assert torch.equal(hook.bank.prototypes[~present], protos[~present])
    assert hook.bank.pending is None
