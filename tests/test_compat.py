"""The compatibility layer: safe checkpoint loading and CPU multi-process set-up."""
import builtins
import fractions
import logging
import os
import pickle

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MessageHub, MMLogger
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner import load_checkpoint
from mmengine.runner.checkpoint import _load_checkpoint

import mmseg_uncert  # noqa: F401  (registers the allow-list and the loader)
from mmseg_uncert import compat


class _ExecOnLoad:
    """Pickles as a call to exec: loading it would write ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f'open({self.marker!r}, "w").write("ran")', ))


def _message_hub_checkpoint() -> dict:
    """What mmengine's Runner.save_checkpoint writes besides the weights."""
    hub = MessageHub('compat-test')
    for value in (3.0, 1.0, 2.0):
        hub.update_scalar('train/loss', value)
    hub.update_info('iter', 40)
    hub.update_info('np_scalar', np.float64(0.25))
    hub.update_info('np_array', np.arange(3, dtype=np.int64))
    return dict(meta=dict(iter=40, epoch=0, seed=1,
                          dataset_meta=dict(classes=('road', 'sky'),
                                            palette=[[1, 2, 3], [4, 5, 6]])),
                state_dict={'w': torch.arange(4.0)},
                message_hub=hub.state_dict())


def test_mmengine_checkpoint_with_message_hub_round_trips(tmp_path,
                                                          monkeypatch):
    path = str(tmp_path / 'iter_40.pth')
    torch.save(_message_hub_checkpoint(), path)
    # As in a fresh process that has created no HistoryBuffer yet.
    monkeypatch.setattr(HistoryBuffer, '_statistics_methods', {})

    # Through mmengine's loader (what --resume and load_from use) ...
    loaded = _load_checkpoint(path, map_location='cpu')
    # ... and through torch.load with its weights_only=True default.
    direct = torch.load(path)

    for ckpt in (loaded, direct):
        assert ckpt['meta']['iter'] == 40
        assert torch.equal(ckpt['state_dict']['w'], torch.arange(4.0))
        hub = MessageHub('compat-test-restored')
        hub.load_state_dict(ckpt['message_hub'])
        buffer = hub.get_scalar('train/loss')
        assert isinstance(buffer, HistoryBuffer)
        # mean of 3, 1, 2 and its statistics methods, resolved via the
        # narrow getattr stand-in
        assert buffer.mean() == pytest.approx(2.0)
        assert buffer.statistics('min') == pytest.approx(1.0)
        assert buffer.statistics('current') == pytest.approx(2.0)
        assert hub.get_info('np_scalar') == np.float64(0.25)
        np.testing.assert_array_equal(hub.get_info('np_array'), [0, 1, 2])


def test_code_executing_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / 'executed.txt'
    path = str(tmp_path / 'evil.pth')
    torch.save({'state_dict': {}, 'payload': _ExecOnLoad(str(marker))}, path)

    with pytest.raises(pickle.UnpicklingError) as info:
        _load_checkpoint(path, map_location='cpu')
    message = str(info.value)
    assert 'builtins.exec' in message
    assert path in message
    assert compat.TRUSTED_GLOBALS_ENV in message
    assert 'trust_checkpoint_globals' in message
    assert not marker.exists()


class _Opaque:
    """A class no allow-list knows: pickled by reference to this module."""

    def __init__(self, value: int) -> None:
        self.value = value


@pytest.fixture
def weights_only_env_unset(monkeypatch):
    for name in (compat.TORCH_NO_WEIGHTS_ONLY_ENV,
                 'TORCH_FORCE_WEIGHTS_ONLY_LOAD'):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def opaque_checkpoint(tmp_path) -> str:
    path = str(tmp_path / 'opaque.pth')
    torch.save({'state_dict': {'w': torch.ones(2)}, 'extra': _Opaque(7)}, path)
    return path


@pytest.mark.parametrize('unset', ['', '0', 'no'])
def test_unknown_class_is_refused_naming_both_ways_to_trust_it(
        opaque_checkpoint, weights_only_env_unset, unset):
    if unset:  # values torch does not count as set
        weights_only_env_unset.setenv(compat.TORCH_NO_WEIGHTS_ONLY_ENV, unset)
    with pytest.raises(pickle.UnpicklingError) as info:
        _load_checkpoint(opaque_checkpoint, map_location='cpu')
    message = str(info.value)
    assert f'{_Opaque.__module__}._Opaque' in message
    assert f'{compat.TRUSTED_GLOBALS_ENV}={_Opaque.__module__}._Opaque' in message
    assert f'{compat.TORCH_NO_WEIGHTS_ONLY_ENV}=1' in message


@pytest.mark.parametrize('value', ['1', 'true', 'YES', 'y'])
def test_torch_opt_out_of_weights_only_is_honoured(
        opaque_checkpoint, weights_only_env_unset, value):
    """torch's TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD, with torch's own truthy values."""
    weights_only_env_unset.setenv(compat.TORCH_NO_WEIGHTS_ONLY_ENV, value)
    with pytest.warns(UserWarning, match=compat.TORCH_NO_WEIGHTS_ONLY_ENV):
        ckpt = _load_checkpoint(opaque_checkpoint, map_location='cpu')
    assert isinstance(ckpt['extra'], _Opaque) and ckpt['extra'].value == 7
    assert torch.equal(ckpt['state_dict']['w'], torch.ones(2))


def test_torch_conflicting_weights_only_switches_are_torchs_error(
        opaque_checkpoint, weights_only_env_unset):
    weights_only_env_unset.setenv(compat.TORCH_NO_WEIGHTS_ONLY_ENV, '1')
    weights_only_env_unset.setenv('TORCH_FORCE_WEIGHTS_ONLY_LOAD', '1')
    with pytest.raises(RuntimeError, match='Only one of'):
        _load_checkpoint(opaque_checkpoint, map_location='cpu')


class _ListHandler(logging.Handler):

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_mmengine_logs_the_local_backend(tmp_path):
    """mmengine names the backend by the loader's name after ``load_from_``."""
    path = str(tmp_path / 'linear.pth')
    weight = torch.tensor([[0.5, -2.0]])
    torch.save({'state_dict': {'weight': weight, 'bias': torch.tensor([3.0])},
                'meta': {'iter': 1}}, path)
    model = torch.nn.Linear(2, 1)
    logger = MMLogger.get_instance('compat-log-test')
    handler = _ListHandler()
    logger.addHandler(handler)
    try:
        load_checkpoint(model, path, map_location='cpu', strict=True,
                        logger=logger)
    finally:
        logger.removeHandler(handler)
    assert f'Loads checkpoint by local backend from path: {path}' in \
        handler.messages
    assert torch.equal(model.weight.data, weight)
    assert model.bias.item() == 3.0


def test_getattr_stand_in_resolves_only_statistics():
    assert compat._history_buffer_statistic(HistoryBuffer, 'min') is \
        HistoryBuffer.min
    for owner, name in [(HistoryBuffer, '__init__'), (HistoryBuffer, 'update'),
                        (os, 'system')]:
        with pytest.raises(pickle.UnpicklingError, match=repr(name)):
            compat._history_buffer_statistic(owner, name)


def test_getattr_pickle_reaching_beyond_statistics_is_refused(tmp_path):

    class Reach:

        def __reduce__(self):
            return (getattr, (HistoryBuffer, 'update'))

    path = str(tmp_path / 'reach.pth')
    torch.save({'x': Reach()}, path)
    with pytest.raises(pickle.UnpicklingError, match="'update'"):
        _load_checkpoint(path, map_location='cpu')


@pytest.fixture
def restore_safe_globals():
    saved = torch.serialization.get_safe_globals()
    yield
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals(saved)


def test_explicit_trust_lets_a_refused_global_load(tmp_path,
                                                    restore_safe_globals):
    path = str(tmp_path / 'fraction.pth')
    torch.save({'ratio': fractions.Fraction(3, 4)}, path)
    with pytest.raises(pickle.UnpicklingError, match='fractions.Fraction'):
        _load_checkpoint(path, map_location='cpu')

    compat.trust_checkpoint_globals(['fractions.Fraction'])
    assert _load_checkpoint(path)['ratio'] == fractions.Fraction(3, 4)


def test_trust_from_environment(tmp_path, monkeypatch, restore_safe_globals):
    path = str(tmp_path / 'fraction.pth')
    torch.save({'ratio': fractions.Fraction(1, 3)}, path)
    monkeypatch.setenv(compat.TRUSTED_GLOBALS_ENV, ' fractions.Fraction ,')
    compat.register_checkpoint_safe_globals()
    assert _load_checkpoint(path)['ratio'] == fractions.Fraction(1, 3)


def test_trusting_an_unknown_name_is_an_error():
    with pytest.raises(ValueError, match='no_such_module.Thing'):
        compat.trust_checkpoint_globals(['no_such_module.Thing'])


def test_missing_checkpoint_names_the_path(tmp_path):
    path = str(tmp_path / 'nope.pth')
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        _load_checkpoint(path)


def test_single_process_config_is_left_alone():
    cfg = Config(dict(launcher='none', model_wrapper_cfg=None))
    compat.setup_cpu_distributed(cfg)
    assert cfg.model_wrapper_cfg is None
    assert not torch.distributed.is_initialized()
    assert compat.cpu_model_wrapper_cfg({'type': 'X'}) == {'type': 'X'}


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
def test_cpu_launchers_without_torchrun_say_what_to_do(monkeypatch):
    with pytest.raises(RuntimeError, match='torchrun'):
        compat.init_cpu_distributed('slurm')
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RuntimeError, match='RANK'):
        compat.init_cpu_distributed('pytorch')


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
def test_cpu_process_group_and_wrapper_cfg(monkeypatch):
    """One-process gloo group: the wrapper config loses its device ids."""
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '1')
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', '29613')
    cfg = Config(dict(launcher='pytorch', find_unused_parameters=True,
                      model_wrapper_cfg=dict(device_ids=[0])))
    try:
        compat.setup_cpu_distributed(cfg)
        assert torch.distributed.get_backend() == 'gloo'
        assert cfg.model_wrapper_cfg == dict(
            type='MMDistributedDataParallel', broadcast_buffers=False,
            find_unused_parameters=True, device_ids=None)
        # idempotent: a second call changes nothing
        compat.setup_cpu_distributed(cfg)
        assert cfg.model_wrapper_cfg['device_ids'] is None
    finally:
        torch.distributed.destroy_process_group()
