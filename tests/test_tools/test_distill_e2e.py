"""The distillation recipe through the runner: train, checkpoint, test, convert."""
import os
import os.path as osp

import pytest
import torch

from conftest import ROOT, run_tool
from helpers.members import save_member
from helpers.tiny_config import PROJECT_CONFIG, write_tiny_config
from helpers.tool_runs import _latest_metrics

DISTILL = osp.join(ROOT, 'configs', 'distill',
                   'distill-ensemble-3x_fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py')


@pytest.fixture(scope='module')
def distilled(tiny_data_root, tmp_path_factory):
    """The recipe trained 2 iterations from two random members: its config,
    run folder and training log."""
    work = tmp_path_factory.mktemp('distill')
    members = [dict(config=PROJECT_CONFIG,
                    checkpoint=save_member(str(work / f'm{i}.pth'), seed=i,
                                           num_classes=19)) for i in range(2)]
    cfg = write_tiny_config(
        str(work / 'distill.py'), tiny_data_root, max_iters=2, base=DISTILL,
        extra=f"""
        model = dict(teacher=dict(_delete_=True, type='EnsembleSegmentor',
                                  members={members!r}))
        """)
    run_dir = str(work / 'run')
    proc = run_tool(['tools/train.py', cfg, '--work-dir', run_dir])
    return dict(cfg=cfg, run_dir=run_dir, log=proc.stdout + proc.stderr)


def test_distill_train_test_and_convert(distilled, tmp_path):
    cfg, run_dir, log = distilled['cfg'], distilled['run_dir'], distilled['log']
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


def test_deployed_student_predicts_as_the_distiller(distilled, tiny_data_root, tmp_path):
    """init_uncertainty_model turns the distillation config into the student
    alone (no teacher), with the checkpoint's weights: its outputs equal the
    EnsembleDistiller's own test_step; tools/visualize_uncertainty.py draws it."""
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.runner import load_checkpoint

    from mmseg.registry import MODELS
    from mmseg_uncert.apis import init_uncertainty_model
    from mmseg_uncert.workflows.split_evaluation import build_split
    from mmseg_uncert.models.segmentors import mmseg_scope

    cfg = distilled['cfg']
    ckpt = osp.join(distilled['run_dir'], 'iter_2.pth')
    deployed = init_uncertainty_model(cfg, ckpt)
    assert type(deployed).__name__ == 'UncertaintyEncoderDecoder'
    assert not hasattr(deployed, 'teacher')
    with mmseg_scope():
        distiller = MODELS.build(Config.fromfile(cfg).model)
    load_checkpoint(distiller, ckpt, map_location='cpu', strict=True)
    distiller.eval()
    batch = pseudo_collate([build_split(cfg, split='val')[0]])
    with torch.no_grad():
        ours, theirs = deployed.test_step(batch)[0], distiller.test_step(batch)[0]
    torch.testing.assert_close(ours.seg_logits.data, theirs.seg_logits.data)
    torch.testing.assert_close(ours.pred_uncertainty.std, theirs.pred_uncertainty.std)
    # the pictures tool on the same student, with ground truth and true maps
    out = str(tmp_path / 'pictures')
    proc = run_tool(['tools/visualize_uncertainty.py', cfg, ckpt,
                     osp.join(tiny_data_root, 'leftImg8bit', 'ood'), '--ann-dir',
                     osp.join(tiny_data_root, 'gtFine', 'ood'), '--out-dir', out,
                     '--limit', '2', '--name', 'student'])
    assert '2 pictures written' in proc.stdout
    assert len(os.listdir(out)) == 2
    assert sorted(os.listdir(out)) == ['synthcity_000000_000019_uncertainty.png',
                                       'synthcity_000001_000019_uncertainty.png']
    proc = run_tool(['tools/visualize_uncertainty.py', cfg, ckpt,
                     osp.join(tiny_data_root, 'leftImg8bit', 'ood'), '--out-dir', out,
                     '--maps', 'epistemic'], check=False)
    assert proc.returncode != 0
    assert "gives no ['epistemic'] map; it gives ['std']" in proc.stderr
    os.makedirs(tmp_path / 'empty')
    proc = run_tool(['tools/visualize_uncertainty.py', cfg, ckpt, str(tmp_path / 'empty'),
                     '--out-dir', out], check=False)
    assert proc.returncode != 0 and "'_leftImg8bit.png'" in proc.stderr
