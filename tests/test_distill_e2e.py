"""The distillation recipe through the runner: train, checkpoint, test, convert."""
import os.path as osp

import torch

from conftest import ROOT, run_tool
from helpers.members import save_member
from helpers.tiny_config import PROJECT_CONFIG, write_tiny_config
from test_tools_e2e import _latest_metrics

DISTILL = osp.join(ROOT, 'configs',
                   'distill-ensemble-3x_fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py')


def test_distill_train_test_and_convert(tiny_data_root, tmp_path):
    members = [dict(config=PROJECT_CONFIG,
                    checkpoint=save_member(str(tmp_path / f'm{i}.pth'), seed=i,
                                           num_classes=19)) for i in range(2)]
    cfg = write_tiny_config(
        str(tmp_path / 'distill.py'), tiny_data_root, max_iters=2, base=DISTILL,
        extra=f"""
        model = dict(teacher=dict(_delete_=True, type='EnsembleSegmentor',
                                  members={members!r}))
        """)
    run_dir = str(tmp_path / 'run')
    proc = run_tool(['tools/train.py', cfg, '--work-dir', run_dir])
    log = proc.stdout + proc.stderr
    for key in ('decode.loss_ce', 'distill.loss_kd', 'distill.loss_uncertainty',
                'distill.loss_pairwise'):
        assert key in log, key
    ckpt = osp.join(run_dir, 'iter_2.pth')
    state = torch.load(ckpt, map_location='cpu', weights_only=False)['state_dict']
    assert state and not any(k.startswith('teacher') for k in state)
    assert any(k.startswith('decode_head.uncertainty_branch') for k in state)
    test_dir = str(tmp_path / 'test')
    run_tool(['tools/test.py', cfg, ckpt, '--work-dir', test_dir])
    metrics = _latest_metrics(test_dir)
    assert 'auroc/std' in metrics and 'mIoU' in metrics
    # the converter keeps exactly the student's tensors
    out = str(tmp_path / 'student.pth')
    run_tool(['tools/convert_distill_checkpoint.py', ckpt, out])
    student = torch.load(out, map_location='cpu', weights_only=False)['state_dict']
    assert set(student) == set(state)
    prefixed = {f'architecture.{k}': v for k, v in state.items()}
    prefixed['distiller.teacher.w'] = torch.zeros(1)
    torch.save(dict(state_dict=prefixed), str(tmp_path / 'razor.pth'))
    run_tool(['tools/convert_distill_checkpoint.py', str(tmp_path / 'razor.pth'), out])
    assert set(torch.load(out, map_location='cpu', weights_only=False)['state_dict']) == set(state)
