"""On a GPU: every segmentor trains and tests with and without mixed
precision, the metric gives the CPU's numbers, the teacher runs under
autocast, the tools train with --amp, and two processes train over nccl.

Skipped where CUDA is absent; the same steps run on the CPU in
``tests/test_devices.py`` (in float64 and under CPU autocast)."""
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmseg.registry import MODELS

from mmseg_uncert.models.segmentors import mmseg_scope

from conftest import ROOT, run_tool, tool_env
from helpers.device_checks import (INFERENCE_ONLY, SEGMENTORS, batch, build_segmentor,
                                   evaluate, run_steps, scores_of, train_step)
from helpers.members import member_model_cfg, save_member
from helpers.metric_samples import random_samples
from helpers.tiny_config import PROJECT_CONFIG, write_tiny_config
from helpers.tool_runs import _latest_metrics

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason='needs a CUDA GPU')
CUDA = torch.device('cuda', 0)
DISTILL = osp.join(ROOT, 'configs', 'distill',
                   'distill-ensemble-3x_fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py')
AMP = [None, torch.float16, torch.bfloat16]


def _amp_id(dtype) -> str:
    return 'fp32' if dtype is None else str(dtype).split('.')[-1]


@pytest.mark.parametrize('amp_dtype', AMP, ids=_amp_id)
@pytest.mark.parametrize('name', SEGMENTORS)
def test_training_and_test_steps_on_cuda(name, amp_dtype, tmp_path):
    if amp_dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip('this GPU has no bfloat16')
    out = run_steps(name, str(tmp_path), CUDA, amp_dtype=amp_dtype)
    if name not in INFERENCE_ONLY:
        assert out['losses']['loss'].dtype == torch.float32
    # the predictions' metrics equal those of the same samples on the CPU,
    # but for the last bits of float32 softmaxes (a few pixels change bins)
    cpu = evaluate([s.cpu() for s in out['samples']], scores_of(out['samples']))
    assert out['metrics'].keys() == cpu.keys()
    for key, value in cpu.items():
        assert out['metrics'][key] == pytest.approx(value, rel=1e-4, abs=1e-5,
                                                    nan_ok=True), key


def _to(samples: list[dict], device: str, logits_dtype=None) -> list[dict]:
    def move(value):
        if isinstance(value, torch.Tensor):
            return value.to(device)
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        return value
    moved = [move(s) for s in samples]
    if logits_dtype is not None:
        for s in moved:
            s['seg_logits']['data'] = s['seg_logits']['data'].to(logits_dtype)
    return moved


def test_metric_on_cuda_equals_the_cpu_result():
    from mmseg_uncert.evaluation import UncertaintyMetric

    def run(samples):
        metric = UncertaintyMetric(scores=('max_prob', 'entropy', 'std'))
        metric.process({}, samples)
        return metric.evaluate(len(samples))

    # float64 logits: the same numbers to float64's last bits
    samples = _to(random_samples(0, n=4, c=19, h=96, w=200), 'cpu', torch.float64)
    cpu = run(samples)
    cuda = run(_to(samples, CUDA))
    for key, value in cpu.items():
        assert cuda[key] == pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True), key
    # labels and maps left on the CPU, logits on the GPU: brought together
    mixed = _to(samples, 'cpu')
    for s in mixed:
        s['seg_logits']['data'] = s['seg_logits']['data'].to(CUDA)
    assert run(mixed) == pytest.approx(cpu, rel=1e-9, abs=1e-12, nan_ok=True)
    # float32 logits: a few pixels may change bins by the last bits
    samples = _to(samples, 'cpu', torch.float32)
    cpu = run(samples)
    assert run(_to(samples, CUDA)) == pytest.approx(cpu, rel=1e-4, abs=1e-5, nan_ok=True)
    # float16 logits (an AMP model's output) give about the float32 numbers
    half = run(_to(samples, CUDA, torch.float16))
    assert half['ECE'] == pytest.approx(cpu['ECE'], abs=2e-3)
    assert half['auroc/entropy'] == pytest.approx(cpu['auroc/entropy'], abs=2e-3)


def test_anomaly_metric_of_logits_on_cuda_equals_the_cpu_result():
    """max_prob and entropy computed on the GPU, every protocol, the component
    metrics at the run's best-F1 threshold included (the stored maps on the
    CPU)."""
    from mmseg_uncert.evaluation import AnomalyMetric

    def run(samples, protocol):
        metric = AnomalyMetric(protocol=protocol, scores=('max_prob', 'entropy', 'std'),
                               min_gt_component_size=0, min_pred_component_size=4)
        for sample in samples:
            metric.process({}, [sample])
        return metric.evaluate(len(samples))

    samples = _to(random_samples(5, n=3, c=19, h=96, w=200), 'cpu', torch.float64)
    for protocol in ('smiyc', 'fishyscapes', 'streethazards'):
        cpu = run(samples, protocol)
        assert run(_to(samples, CUDA), protocol) == pytest.approx(
            cpu, rel=1e-9, abs=1e-12, nan_ok=True), protocol


def test_distiller_teacher_under_autocast_on_cuda(tmp_path):
    """teacher_autocast: the teacher runs in float16 while the student trains
    in float32; the KD and uncertainty targets stay close to float32's."""
    losses = {}
    for autocast in (False, True):
        model = build_segmentor('EnsembleDistiller', str(tmp_path)).to(CUDA)
        model.teacher_autocast = autocast
        model.train()
        data = model.data_preprocessor(batch(2), True)
        torch.manual_seed(0)
        losses[autocast] = {k: v.item() for k, v in model(**data, mode='loss').items()
                            if k.startswith('distill.')}
        assert next(model.teacher.parameters()).dtype == torch.float32
    for key, value in losses[False].items():
        assert losses[True][key] == pytest.approx(value, rel=5e-2, abs=1e-3), key


def test_prototype_bank_and_pseudo_labeller_on_cuda(tmp_path):
    model = build_segmentor('ProDASegmentor', str(tmp_path)).to(CUDA)
    # what moves with the model: the warm-up model, its preprocessor, the bank
    assert model.pseudo_labeller.data_preprocessor.device == CUDA
    assert next(model.pseudo_labeller.parameters()).device == CUDA
    assert model.prototype_bank.prototypes.device == CUDA
    momentum = model.prototype_bank.momentum_network.module
    assert next(momentum.parameters()).device == CUDA
    before = model.prototype_bank.prototypes.clone()
    train_step(model, 'ProDASegmentor', CUDA)
    assert not torch.equal(model.prototype_bank.prototypes, before)
    assert model.prototype_bank.prototypes.device == CUDA


def test_cbst_thresholds_and_pseudo_labels_on_cuda(tmp_path):
    """CBST's histograms and thresholds on CUDA equal the CPU's, and a
    training step with them runs on the GPU."""
    from mmengine.config import ConfigDict
    from mmseg.registry import MODELS
    from mmseg_uncert.engine.hooks.class_balanced_threshold_hook import (
        class_balanced_thresholds, class_confidence_histograms)
    from mmseg_uncert.models.segmentors import mmseg_scope
    g = torch.Generator().manual_seed(0)
    prob = torch.rand(2, 5, 16, 32, generator=g).softmax(1)
    valid = torch.rand(2, 16, 32, generator=g) > 0.1
    cpu = class_balanced_thresholds(class_confidence_histograms(prob, valid, 1000), 0.5)
    gpu = class_balanced_thresholds(
        class_confidence_histograms(prob.to(CUDA), valid.to(CUDA), 1000), 0.5)
    assert torch.equal(gpu.cpu(), cpu)
    warmup = save_member(str(tmp_path / 'warmup.pth'), seed=0, num_classes=5)
    cfg = member_model_cfg(5)
    cfg.update(type='ProDASegmentor',
               data_preprocessor=dict(cfg['data_preprocessor'], size=(64, 128)),
               pseudo_labeller=dict(model=member_model_cfg(5), checkpoint=warmup),
               rectify=False, structure_weight=0.0, class_balanced_portion=0.5)
    with mmseg_scope():
        model = MODELS.build(ConfigDict(cfg)).to(CUDA)
    assert model.class_thresholds.device == CUDA
    model.class_thresholds.copy_(torch.full((5,), 0.2))
    log = train_step(model, 'ProDASegmentor', CUDA)
    assert torch.isfinite(log['target.loss_sce'])


def test_teacher_checkpoint_saved_on_gpu_loads_on_a_cpu_only_machine(tmp_path):
    path = save_member(str(tmp_path / 'member.pth'), seed=0)
    state = torch.load(path)
    state['state_dict'] = {k: v.to(CUDA) for k, v in state['state_dict'].items()}
    torch.save(state, path)
    code = (
        'import torch, mmseg_uncert\n'
        'from mmseg.registry import MODELS\n'
        'from mmseg_uncert.models.segmentors import mmseg_scope\n'
        'assert not torch.cuda.is_available()\n'
        'with mmseg_scope():\n'
        f'    m = MODELS.build(dict(type="EnsembleSegmentor", members=[dict(model={member_model_cfg()!r}, checkpoint={path!r})]))\n'
        'assert next(m.parameters()).device.type == "cpu"\n'
        'print(tuple(m(torch.randn(1, 3, 64, 128)).shape))\n')
    env = dict(tool_env(), CUDA_VISIBLE_DEVICES='')
    proc = subprocess.run([sys.executable, '-c', code], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith('(1, 5, 64, 128)')


def _distill_config(work, tiny_data_root) -> str:
    members = [dict(config=PROJECT_CONFIG,
                    checkpoint=save_member(str(work / f'm{i}.pth'), seed=i,
                                           num_classes=19)) for i in range(2)]
    return write_tiny_config(
        str(work / 'distill.py'), tiny_data_root, max_iters=2, base=DISTILL,
        extra=f"""
        model = dict(teacher_autocast=True,
                     teacher=dict(_delete_=True, type='EnsembleSegmentor',
                                  members={members!r}))
        """)


@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
def test_amp_training_and_testing_with_the_tools(dtype, tiny_data_root, tmp_path):
    if dtype == 'bfloat16' and not torch.cuda.is_bf16_supported():
        pytest.skip('this GPU has no bfloat16')
    cfg = _distill_config(tmp_path, tiny_data_root)
    run_dir = str(tmp_path / 'run')
    run_tool(['tools/train.py', cfg, '--amp', '--work-dir', run_dir,
              '--cfg-options', f'optim_wrapper.dtype={dtype}'])
    ckpt = osp.join(run_dir, 'iter_2.pth')
    saved = torch.load(ckpt, map_location='cpu', weights_only=False)
    assert 'loss_scaler' in saved['optimizer']  # AmpOptimWrapper trained it
    state = saved['state_dict']
    assert not any(k.startswith('teacher') for k in state)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    test_dir = str(tmp_path / 'test')
    run_tool(['tools/test.py', cfg, ckpt, '--work-dir', test_dir])
    metrics = _latest_metrics(test_dir)
    assert 'auroc/std' in metrics and 'mIoU' in metrics


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason='needs two GPUs')
def test_two_process_nccl_distillation(tiny_data_root, tmp_path):
    cfg = _distill_config(tmp_path, tiny_data_root)
    run_dir = str(tmp_path / 'run')
    run_tool(['-m', 'torch.distributed.run', '--nproc_per_node=2',
              '--master_port=29661', 'tools/train.py', cfg, '--launcher',
              'pytorch', '--work-dir', run_dir])
    assert osp.isfile(osp.join(run_dir, 'iter_2.pth'))
    test_dir = str(tmp_path / 'test')
    run_tool(['-m', 'torch.distributed.run', '--nproc_per_node=2',
              '--master_port=29663', 'tools/test.py', cfg,
              osp.join(run_dir, 'iter_2.pth'), '--launcher', 'pytorch',
              '--work-dir', test_dir])
    one_dir = str(tmp_path / 'test_one')
    run_tool(['tools/test.py', cfg, osp.join(run_dir, 'iter_2.pth'),
              '--work-dir', one_dir])
    two, one = _latest_metrics(test_dir), _latest_metrics(one_dir)
    for key in ('ECE', 'NLL', 'auroc/std', 'auroc/entropy'):
        assert two[key] == pytest.approx(one[key], rel=1e-6, abs=1e-9), key


def test_calibration_fits_and_applies_on_cuda(tmp_path, tiny_data_root):
    """Temperature scaling fitted on the GPU equals the CPU fit; local
    temperature scaling trains there; CalibratedSegmentor moved to the GPU
    predicts the CPU's calibrated logits."""
    from mmengine.dataset import pseudo_collate
    from mmseg.registry import MODELS
    from mmseg_uncert.workflows.split_evaluation import build_split
    from mmseg_uncert.models.calibration import LocalTemperatureScaling, TemperatureScaling
    from mmseg_uncert.models.segmentors import mmseg_scope
    from helpers.calibration import _cache, _overconfident
    data = _cache(tmp_path, _overconfident(0))
    cpu = TemperatureScaling().fit(data)
    gpu = TemperatureScaling().to(CUDA).fit(data)
    assert gpu['temperature'] == pytest.approx(cpu['temperature'], rel=1e-6)
    lts = LocalTemperatureScaling(num_classes=4).to(CUDA)
    assert lts.fit(data, epochs=2)['nll'] <= gpu['nll'] + 1e-6
    cfg = write_tiny_config(str(tmp_path / 'tiny.py'), tiny_data_root, max_iters=1)
    ckpt = save_member(str(tmp_path / 'm.pth'), seed=0, num_classes=19)
    with mmseg_scope():
        model = MODELS.build(dict(type='CalibratedSegmentor',
                                  model=dict(config=cfg, checkpoint=ckpt),
                                  calibrator=dict(type='TemperatureScaling', temperature=1.5)))
    batch = pseudo_collate([build_split(cfg, split='val')[0]])
    on_cpu = model.eval().test_step(batch)[0].seg_logits.data
    on_gpu = model.to(CUDA).test_step(batch)[0].seg_logits.data
    assert on_gpu.device.type == 'cuda'
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-4, atol=1e-4)


def test_anomaly_metric_on_cuda_equals_the_cpu_result():
    from helpers.anomaly_samples import _metric, _random_run, _run, _sample
    gts, scores = _random_run(1)
    samples = [_sample(g, s) for g, s in zip(gts, scores)]
    for protocol in ('smiyc', 'streethazards'):
        cpu = _run(_metric(protocol=protocol), samples)
        gpu = _run(_metric(protocol=protocol), _to(samples, 'cuda'))
        assert gpu.keys() == cpu.keys()
        for key, value in cpu.items():
            assert gpu[key] == pytest.approx(value, rel=1e-6, nan_ok=True), key


def test_streamed_ensemble_holds_one_member_on_the_gpu(tmp_path):
    """stream_members=True on CUDA: the resident ensemble's maps, with the
    GPU holding one member's weights at a time instead of all four."""
    specs = [dict(model=member_model_cfg(),
                  checkpoint=save_member(str(tmp_path / f'm{i}.pth'), seed=i))
             for i in range(4)]
    x = torch.randn(1, 3, 256, 512, device=CUDA)
    metas = [dict(ori_shape=(256, 512), img_shape=(256, 512), pad_shape=(256, 512))]
    peaks, outs = {}, {}
    for stream in (False, True):
        with mmseg_scope():
            model = MODELS.build(dict(type='EnsembleSegmentor', members=specs,
                                      stream_members=stream)).to(CUDA)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            outs[stream] = model.encode_decode(x, metas)
        torch.cuda.synchronize()
        peaks[stream] = torch.cuda.max_memory_allocated()
        if not stream:
            member_bytes = sum(p.numel() * p.element_size()
                               for p in model.members[0].parameters())
        del model
    assert torch.allclose(outs[True], outs[False], atol=1e-5)
    # three members' weights fewer on the device (half of one for slack)
    assert peaks[True] <= peaks[False] - 2.5 * member_bytes, (peaks, member_bytes)
