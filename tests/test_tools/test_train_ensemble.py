"""tools/train_ensemble.py, and tools/test.py with ensembles and MC dropout.

End to end on generated images.
"""
import json
import os.path as osp

import pytest
import torch

from conftest import run_tool
from helpers.tiny_config import write_tiny_config
from helpers.tool_runs import _latest_metrics

TEST_EVALUATOR = """
test_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='UncertaintyMetric',
         scores=['max_prob', 'epistemic', 'aleatoric', 'std', 'variation_ratio']),
]
"""


@pytest.fixture(scope='module')
def ensemble(tmp_path_factory, tiny_data_root):
    work = tmp_path_factory.mktemp('ensemble')
    cfg = write_tiny_config(str(work / 'member.py'), tiny_data_root, max_iters=2,
                            extra=TEST_EVALUATOR)
    work_dir = str(work / 'ens')
    proc = run_tool(['tools/train_ensemble.py', cfg, '--members', '2',
                     '--work-dir', work_dir, '--seed', '5'])
    return dict(cfg=cfg, work_dir=work_dir, log=proc.stdout + proc.stderr)


def test_members_get_their_seeds_and_the_ensemble_config(ensemble):
    for index in range(2):
        record = json.load(open(osp.join(ensemble['work_dir'], f'member_{index}',
                                         'member.json')))
        assert record['seed'] == 5 + index
        assert osp.isfile(record['checkpoint'])
    # different seeds, different weights
    weights = [torch.load(json.load(open(osp.join(
        ensemble['work_dir'], f'member_{i}', 'member.json')))['checkpoint'],
        map_location='cpu', weights_only=False)['state_dict']
        ['decode_head.conv_seg.weight'] for i in range(2)]
    assert not torch.equal(*weights)
    assert osp.isfile(osp.join(ensemble['work_dir'], 'ensemble.py'))


def test_finished_members_are_skipped(ensemble):
    proc = run_tool(['tools/train_ensemble.py', ensemble['cfg'], '--members', '2',
                     '--work-dir', ensemble['work_dir'], '--seed', '5'])
    out = proc.stdout + proc.stderr
    assert out.count('done, skipped') == 2
    assert 'Iter(train)' not in out


def test_ensemble_in_the_test_tool_with_uncertainty_scores(ensemble, tmp_path):
    work_dir = str(tmp_path / 'test')
    run_tool(['tools/test.py', osp.join(ensemble['work_dir'], 'ensemble.py'),
              '--work-dir', work_dir])
    metrics = _latest_metrics(work_dir)
    for key in ('mIoU', 'ECE', 'auroc/epistemic', 'auroc/std', 'auroc/total',
                'aleatoric_auroc/aleatoric', 'auroc/variation_ratio'):
        assert key in metrics, key
    assert 0 <= metrics['auroc/epistemic'] <= 1


def test_mc_dropout_in_the_test_tool(ensemble, tiny_data_root, tmp_path):
    member = json.load(open(osp.join(ensemble['work_dir'], 'member_0',
                                     'member.json')))
    cfg = write_tiny_config(
        str(tmp_path / 'mc.py'), tiny_data_root, max_iters=2,
        base=member['config'], extra=f"""
        model = dict(_delete_=True, type='MCDropoutSegmentor', num_samples=3,
                     model=dict(config={member['config']!r},
                                checkpoint={member['checkpoint']!r}))
        """)
    work_dir = str(tmp_path / 'test')
    run_tool(['tools/test.py', cfg, '--work-dir', work_dir])
    assert 'auroc/epistemic' in _latest_metrics(work_dir)


def test_a_plain_model_without_checkpoint_is_refused(ensemble, tmp_path):
    proc = run_tool(['tools/test.py', ensemble['cfg'], '--work-dir',
                     str(tmp_path)], check=False)
    assert proc.returncode != 0
    assert 'give a checkpoint for EncoderDecoder' in proc.stdout + proc.stderr


def test_parallel_jobs_train_the_same_members(ensemble, tmp_path):
    """--jobs 2 trains both members at once, with each member's output
    prefixed, into the same weights as the sequential run (same seeds)."""
    work_dir = str(tmp_path / 'ens')
    proc = run_tool(['tools/train_ensemble.py', ensemble['cfg'], '--members', '2',
                     '--work-dir', work_dir, '--seed', '5', '--jobs', '2'])
    out = proc.stdout + proc.stderr
    assert '[member 0] ' in out and '[member 1] ' in out
    for index in range(2):
        ours, theirs = (torch.load(json.load(open(osp.join(
            d, f'member_{index}', 'member.json')))['checkpoint'],
            map_location='cpu', weights_only=False)['state_dict']
            for d in (work_dir, ensemble['work_dir']))
        for key, value in theirs.items():
            torch.testing.assert_close(ours[key], value, msg=key)


def test_a_failing_parallel_member_stops_with_its_log(ensemble, tmp_path):
    proc = run_tool(['tools/train_ensemble.py', ensemble['cfg'], '--members', '2',
                     '--work-dir', str(tmp_path / 'ens'), '--jobs', '2',
                     '--cfg-options', 'train_cfg.max_iters=-1'], check=False)
    assert proc.returncode != 0
    assert 'training failed' in proc.stderr and 'its log is in' in proc.stderr


def test_parallel_jobs_share_cores_and_gpus(monkeypatch):
    import importlib.util
    from conftest import ROOT
    spec = importlib.util.spec_from_file_location(
        'train_ensemble', osp.join(ROOT, 'tools', 'train_ensemble.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    envs = [tool.job_env({}, job, 3, cores=16, gpus=['0', '1']) for job in range(3)]
    assert [e['OMP_NUM_THREADS'] for e in envs] == ['5', '5', '5']
    assert [e['CUDA_VISIBLE_DEVICES'] for e in envs] == ['0', '1', '0']
    # the user's thread count wins; no GPU, no device variable
    env = tool.job_env({'OMP_NUM_THREADS': '2'}, 0, 3, cores=16, gpus=[])
    assert env['OMP_NUM_THREADS'] == '2' and 'CUDA_VISIBLE_DEVICES' not in env
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '3,5')
    assert tool.visible_gpus() == ['3', '5']
