"""The tools end to end on generated images, as a user runs them.

Two-process CPU training reaches mmseg_uncert.engine.runner's CompatRunner;
the heteroscedastic config, and UncertaintyVisualizer (--show-dir), run
through tools/train.py and tools/test.py too.
"""
import glob
import json
import os
import os.path as osp
import shutil
import textwrap

import cv2
import numpy as np
import pytest
import torch

from mmseg_uncert.visualization.uncertainty_panels import DPI

from conftest import ROOT, run_tool
from helpers.members import member_model_cfg, save_member
from helpers.tiny_config import write_tiny_config
from helpers.tool_runs import _latest_metrics, _mim

NUM_CLASSES = 19


def _miou_from_pngs(pred_dir: str, data_root: str) -> float:
    """mIoU over the val split, computed from the saved prediction PNGs."""
    intersect = np.zeros(NUM_CLASSES)
    union = np.zeros(NUM_CLASSES)
    gts = sorted(glob.glob(osp.join(data_root, 'gtFine', 'val', '*',
                                    '*_gtFine_labelTrainIds.png')))
    assert gts
    for gt_path in gts:
        stem = osp.basename(gt_path).replace('_gtFine_labelTrainIds.png', '')
        pred = cv2.imread(osp.join(pred_dir, f'{stem}_leftImg8bit.png'),
                          cv2.IMREAD_UNCHANGED)
        gt = cv2.imread(gt_path, cv2.IMREAD_UNCHANGED)
        valid = gt != 255
        p, g = pred[valid], gt[valid]
        for c in range(NUM_CLASSES):
            intersect[c] += np.sum((p == c) & (g == c))
            union[c] += np.sum((p == c) | (g == c))
    with np.errstate(invalid='ignore', divide='ignore'):
        return float(np.nanmean(intersect / union) * 100)


@pytest.fixture(scope='module')
def trained(tmp_path_factory, tiny_data_root):
    """4 training iterations with tools/train.py; checkpoints at 2 and 4."""
    work = tmp_path_factory.mktemp('e2e')
    cfg = write_tiny_config(str(work / 'tiny.py'), tiny_data_root, max_iters=4)
    run_dir = str(work / 'run')
    run_tool(['tools/train.py', cfg, '--work-dir', run_dir])
    return dict(cfg=cfg, run_dir=run_dir, work=work, data_root=tiny_data_root)


def test_train_writes_runner_checkpoints(trained):
    ckpt = torch.load(osp.join(trained['run_dir'], 'iter_4.pth'))
    assert ckpt['meta']['iter'] == 4
    assert 'message_hub' in ckpt and 'optimizer' in ckpt
    assert ckpt['meta']['dataset_meta']['classes'][0] == 'road'
    with open(osp.join(trained['run_dir'], 'last_checkpoint')) as f:
        assert f.read().strip().endswith('iter_4.pth')


def test_resume_continues_where_training_stopped(trained, tmp_path):
    run_dir = str(tmp_path / 'resumed')
    shutil.copytree(trained['run_dir'], run_dir)
    proc = run_tool(['tools/train.py', trained['cfg'], '--work-dir', run_dir,
                     '--resume', '--cfg-options', 'train_cfg.max_iters=6'])
    log = proc.stdout + proc.stderr
    assert 'resumed' in log.lower()
    assert 'Iter(train) [5/6]' in log and 'Iter(train) [1/6]' not in log
    before = torch.load(osp.join(run_dir, 'iter_4.pth'))
    after = torch.load(osp.join(run_dir, 'iter_6.pth'))
    assert after['meta']['iter'] == 6
    name = 'decode_head.conv_seg.weight'
    assert not torch.equal(before['state_dict'][name], after['state_dict'][name])


def test_test_tool_with_out_and_a_list_of_evaluators(trained, tmp_path):
    out = str(tmp_path / 'pred')
    work_dir = str(tmp_path / 'test')
    cfg = write_tiny_config(
        str(tmp_path / 'two_metrics.py'), trained['data_root'], max_iters=4,
        extra="""
        test_evaluator = [
            dict(type='IoUMetric', iou_metrics=['mIoU']),
            dict(type='IoUMetric', iou_metrics=['mDice'], prefix='dice'),
            dict(type='UncertaintyMetric', scores=['max_prob', 'entropy']),
        ]
        """)
    run_tool(['tools/test.py', cfg, osp.join(trained['run_dir'], 'iter_4.pth'),
              '--work-dir', work_dir, '--out', out])
    metrics = _latest_metrics(work_dir)
    assert {'mIoU', 'aAcc', 'dice/mDice', 'dice/aAcc', 'ECE', 'NLL',
            'auroc/entropy', 'aleatoric_auroc/max_prob'} <= set(metrics)
    # the uncertainty metric writes its plots to --out as well
    assert {'reliability_diagram.png', 'reliability_diagram.json',
            'risk_coverage_entropy.png'} <= set(os.listdir(out))
    assert len(glob.glob(osp.join(out, '*_leftImg8bit.png'))) == 4
    expected = _miou_from_pngs(out, trained['data_root'])
    assert metrics['mIoU'] == pytest.approx(expected, abs=0.01)


def test_plain_mmseg_config_without_custom_imports(tiny_data_root, tmp_path):
    """tools/train.py still runs configs that know nothing of this package."""
    base = osp.join(tmp_path, 'plain_base.py')
    with open(base, 'w') as f:
        f.write(textwrap.dedent('''
            _base_ = [
                'mmseg::_base_/default_runtime.py',
                'mmseg::_base_/schedules/schedule_20k.py',
            ]
            norm_cfg = dict(type='BN', requires_grad=True)
            model = dict(
                type='EncoderDecoder',
                data_preprocessor=dict(type='SegDataPreProcessor',
                                       mean=[0., 0., 0.], std=[255., 255., 255.],
                                       bgr_to_rgb=True, seg_pad_val=255,
                                       size=(64, 128)),
                backbone=dict(type='MobileNetV3', arch='small',
                              out_indices=(12, ), norm_cfg=norm_cfg),
                decode_head=dict(type='FCNHead', in_channels=576, channels=16,
                                 num_convs=1, num_classes=19,
                                 norm_cfg=norm_cfg),
                test_cfg=dict(mode='whole'))
            train_dataloader = dict(
                sampler=dict(type='InfiniteSampler', shuffle=True),
                dataset=dict(type='CityscapesDataset',
                             data_prefix=dict(img_path='leftImg8bit/train',
                                              seg_map_path='gtFine/train')))
            val_dataloader = dict(
                batch_size=1,
                sampler=dict(type='DefaultSampler', shuffle=False),
                dataset=dict(type='CityscapesDataset',
                             data_prefix=dict(img_path='leftImg8bit/val',
                                              seg_map_path='gtFine/val')))
            test_dataloader = val_dataloader
            val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
            test_evaluator = val_evaluator
            '''))
    cfg = write_tiny_config(str(tmp_path / 'plain.py'), tiny_data_root,
                            max_iters=2, base=base, uncertainty_gt=False)
    assert 'custom_imports' not in open(cfg).read() + open(base).read()
    run_dir = str(tmp_path / 'run')
    run_tool(['tools/train.py', cfg, '--work-dir', run_dir])
    assert torch.load(osp.join(run_dir, 'iter_2.pth'))['meta']['iter'] == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU path')
@pytest.mark.parametrize('launch', ['torchrun', 'mim'])
def test_two_processes_train_with_gloo_on_cpu(tiny_data_root, tmp_path, launch):
    """torchrun + our tools/train.py, and mim + mmseg's own train.py (which
    reaches CompatRunner through the config's runner_type)."""
    cfg = write_tiny_config(
        str(tmp_path / 'ddp.py'), tiny_data_root, max_iters=3,
        extra='''
        custom_imports = dict(imports=['mmseg_uncert', 'rank_probe'],
                              allow_failed_imports=False)
        custom_hooks = [dict(type='RankProbeHook')]
        ''')
    run_dir = str(tmp_path / 'run')
    if launch == 'torchrun':
        run_tool(['-m', 'torch.distributed.run', '--nproc_per_node=2',
                  '--master_port=29651', 'tools/train.py', cfg, '--launcher',
                  'pytorch', '--work-dir', run_dir])
    else:
        run_tool([_mim(), 'train', 'mmseg', cfg, '--launcher', 'pytorch',
                  '--gpus', '2', '--port', '29653', '--work-dir', run_dir],
                 python=False)
    ranks = [json.load(open(osp.join(run_dir, f'rank{r}.json'))) for r in (0, 1)]
    for r, info in enumerate(ranks):
        assert info['rank'] == r and info['world_size'] == 2
        assert info['backend'] == 'gloo' and info['wrapped']
        assert info['iters'] == 3
    # DDP averages gradients: both ranks end with the same weights, which
    # moved away from the (identical, broadcast) initial ones.
    assert ranks[0]['initial'] == pytest.approx(ranks[1]['initial'], rel=1e-9)
    assert ranks[0]['final'] == pytest.approx(ranks[1]['final'], rel=1e-9)
    assert ranks[0]['final'] != pytest.approx(ranks[0]['initial'], rel=1e-9)


def test_mim_train_and_test_with_custom_imports(trained, tmp_path):
    mim = _mim()
    run_dir = str(tmp_path / 'mim_run')
    run_tool([mim, 'train', 'mmseg', trained['cfg'], '--work-dir', run_dir,
              '--cfg-options', 'train_cfg.max_iters=2'], python=False)
    assert torch.load(osp.join(run_dir, 'iter_2.pth'))['meta']['iter'] == 2

    ckpt = osp.join(trained['run_dir'], 'iter_4.pth')
    mim_dir, tool_dir = str(tmp_path / 'mim_test'), str(tmp_path / 'tool_test')
    run_tool([mim, 'test', 'mmseg', trained['cfg'], '--checkpoint', ckpt,
              '--work-dir', mim_dir], python=False)
    run_tool(['tools/test.py', trained['cfg'], ckpt, '--work-dir', tool_dir])
    mim_metrics, tool_metrics = _latest_metrics(mim_dir), _latest_metrics(tool_dir)
    assert mim_metrics['mIoU'] == tool_metrics['mIoU']
    assert mim_metrics['aAcc'] == tool_metrics['aAcc']


def test_test_tool_tta_and_show_dir(trained, tmp_path):
    work_dir = str(tmp_path / 'tta')
    run_tool(['tools/test.py', trained['cfg'],
              osp.join(trained['run_dir'], 'iter_4.pth'), '--work-dir',
              work_dir, '--tta', '--show-dir', 'vis'])
    metrics = _latest_metrics(work_dir)
    assert 0.0 <= metrics['mIoU'] <= 100.0 and 0.0 <= metrics['aAcc'] <= 100.0
    painted = glob.glob(osp.join(work_dir, 'vis', '**', '*.png'),
                        recursive=True)
    assert len(painted) == 4


def test_amp_without_gpu_stops_with_a_message(trained, tmp_path):
    if torch.cuda.is_available():
        pytest.skip('checks the CPU-only message')
    proc = run_tool(['tools/train.py', trained['cfg'], '--amp', '--work-dir',
                     str(tmp_path / 'amp')], check=False)
    assert proc.returncode != 0
    assert '--amp needs a GPU' in proc.stderr


def test_uncertainty_metric_on_the_ood_split(trained, tmp_path):
    cfg = write_tiny_config(str(tmp_path / 'ood.py'), trained['data_root'], max_iters=4,
                            test_split='ood')
    work_dir = str(tmp_path / 'test')
    run_tool(['tools/test.py', cfg, osp.join(trained['run_dir'], 'iter_4.pth'),
              '--work-dir', work_dir])
    metrics = _latest_metrics(work_dir)
    for key in ('ood_auroc/entropy', 'ood_aupr/max_prob', 'ood_fpr95/entropy'):
        assert 0.0 <= metrics[key] <= 1.0, key


@pytest.mark.parametrize('flags, message', [
    (['--time-only'], '--time-only needs --time N'),
    (['--time', '-1'], '--time takes a number of images (>= 1; 0 times nothing), got -1'),
    (['--time', '5', '--time-only', '--save-maps', 'std'], '--time-only computes no metrics'),
])
def test_evaluate_uncertainty_timing_flags_are_checked(trained, tmp_path, flags, message):
    proc = run_tool(['tools/evaluate_uncertainty.py', '--out-dir', str(tmp_path),
                     '--model', 'm', trained['cfg'], *flags], check=False)
    assert proc.returncode == 2 and message in proc.stderr


def test_anomaly_metric_in_the_test_tool_equals_the_metric_on_the_models_logits(
        trained, tmp_path):
    """SegmentMeIfYouCan's keys from tools/test.py, where mmengine's evaluator
    drives the metric and the component metrics wait for the run's best-F1
    threshold, equal the metric fed the same model's logits one image at a
    time. (This 4-iteration model's max_prob are all 0.94 to a few 1e-5, so
    they tie in the score bins: the definitions are checked on models that
    rank their pixels, in tests/test_evaluation/test_metrics/test_anomaly_metric.py.)"""
    from mmseg.apis import inference_model, init_model

    from mmseg_uncert.evaluation import AnomalyMetric
    evaluator = dict(type='AnomalyMetric', protocol='smiyc', scores=['max_prob', 'entropy'],
                     min_gt_component_size=0, min_pred_component_size=0)
    cfg = write_tiny_config(str(tmp_path / 'anomaly.py'), trained['data_root'], max_iters=4,
                            test_split='ood', extra=f'test_evaluator = [{evaluator!r}]')
    checkpoint = osp.join(trained['run_dir'], 'iter_4.pth')
    work_dir = str(tmp_path / 'test')
    run_tool(['tools/test.py', cfg, checkpoint, '--work-dir', work_dir])
    metrics = _latest_metrics(work_dir)
    model = init_model(cfg, checkpoint, device='cpu')
    metric = AnomalyMetric(**{k: v for k, v in evaluator.items() if k != 'type'})
    images = sorted(glob.glob(osp.join(trained['data_root'], 'leftImg8bit', 'ood', '*',
                                       '*_leftImg8bit.png')))
    for image in images:
        mask = image.replace('leftImg8bit', 'gtFine', 1).replace(
            '_leftImg8bit.png', '_gtFine_ood.png')
        gt = torch.from_numpy((cv2.imread(mask, cv2.IMREAD_UNCHANGED) > 0).astype(np.uint8))
        metric.process({}, [dict(img_path=image, gt_ood=dict(data=gt[None]), seg_logits=dict(
            data=inference_model(model, image).seg_logits.data))])
    expected = metric.evaluate(len(images))
    assert len(images) == 4 and set(expected) <= set(metrics)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


# the heteroscedastic head's config
CONFIG = osp.join(ROOT, 'configs', 'heteroscedastic',
                  'heteroscedastic-fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py')


def test_train_and_test_through_the_tools(tiny_data_root, tmp_path):
    cfg = write_tiny_config(str(tmp_path / 'het.py'), tiny_data_root, max_iters=2,
                            base=CONFIG)
    run_dir = str(tmp_path / 'run')
    proc = run_tool(['tools/train.py', cfg, '--work-dir', run_dir])
    assert 'loss_att_ce' in proc.stdout + proc.stderr
    test_dir = str(tmp_path / 'test')
    run_tool(['tools/test.py', cfg, osp.join(run_dir, 'iter_2.pth'),
              '--work-dir', test_dir])
    metrics = _latest_metrics(test_dir)
    assert 'auroc/aleatoric' in metrics and 'aleatoric_auroc/aleatoric' in metrics


def _streamed_ensemble_config(tiny_data_root, tmp_path) -> str:
    """A tiny config whose model is an EnsembleSegmentor of two saved
    19-class members with stream_members=True, evaluated by mIoU."""
    cfg = write_tiny_config(str(tmp_path / 'tiny.py'), tiny_data_root, max_iters=2,
                            uncertainty_gt=False)
    members = [dict(model=member_model_cfg(19),
                    checkpoint=save_member(str(tmp_path / f'm{i}.pth'), i, 19))
               for i in range(2)]
    ens = tmp_path / 'ensemble.py'
    ens.write_text(f"_base_ = [{cfg!r}]\nmodel = dict(_delete_=True, "
                   f"type='EnsembleSegmentor', members={members!r}, stream_members=True)\n"
                   "test_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU'])]\n")
    return str(ens)


@pytest.mark.slow
def test_test_tool_show_dir_draws_the_maps(tiny_data_root, tmp_path):
    """tools/test.py --show-dir with the visualizer set by --cfg-options:
    one picture per test image (the first 2), image | prediction | ground
    truth | 5 maps. The ensemble streams its members (stream_members): the
    runner moves, evaluates and draws a model that keeps no member; under
    torchrun, CompatRunner leaves it unwrapped (DDP refuses a module with
    nothing to train), and two processes give the mIoU of one."""
    ens = _streamed_ensemble_config(tiny_data_root, tmp_path)
    work = tmp_path / 'work'
    run_tool(['tools/test.py', str(ens), 'none', '--work-dir', str(work),
              '--show-dir', 'vis', '--cfg-options',
              'visualizer.type=UncertaintyVisualizer',
              'test_dataloader.dataset.indices=2'])
    pictures = sorted(glob.glob(str(work / 'vis' / 'vis_data' / 'vis_image' / '*.png')))
    assert len(pictures) == 2
    # the figure is 4 inches per panel at DPI dots per inch: 8 panels in the
    # configs' 4 columns, so 2 rows
    image = cv2.imread(pictures[0])
    height, width = cv2.imread(glob.glob(osp.join(
        tiny_data_root, 'leftImg8bit', 'val', '*', '*.png'))[0]).shape[:2]
    assert image.shape[1] == 4 * 4 * DPI
    assert image.shape[0] == round(2 * (4 * height / width + 0.5) * DPI)
    if not torch.cuda.is_available():  # two CPU processes (gloo)
        two = str(tmp_path / 'two')
        run_tool(['-m', 'torch.distributed.run', '--nproc_per_node=2',
                  '--master_port=29671', 'tools/test.py', ens, 'none', '--launcher',
                  'pytorch', '--work-dir', two, '--cfg-options',
                  'test_dataloader.dataset.indices=2'])
        assert _latest_metrics(two)['mIoU'] == _latest_metrics(str(work))['mIoU']
