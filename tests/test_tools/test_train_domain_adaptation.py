"""ProDA and CBST through tools/train.py: resumed runs, distillation, the recipe."""
import os.path as osp

import pytest
import torch

from conftest import ROOT, run_tool
from helpers.members import save_config_model
from helpers.tiny_config import write_tiny_config

WARMUP = osp.join(ROOT, 'configs', 'fastscnn', 'fast-scnn_1xb4-1k_synthetic-128x256.py')
PRODA = osp.join(ROOT, 'configs', 'proda',
                 'proda_fast-scnn_1xb4-0.3k_synthetic-to-shift-128x256.py')
PRODA_DISTILL = osp.join(ROOT, 'configs', 'proda',
                         'proda-distill_fast-scnn_1xb4-0.3k_synthetic-to-shift-128x256.py')
PRODA_DISTILL2 = PRODA_DISTILL.replace('proda-distill_', 'proda-distill2_')
PRODA_DISTILL3 = PRODA_DISTILL.replace('proda-distill_', 'proda-distill3_')


def _tiny_uda_config(path, data_root, warmup, max_iters, base=PRODA, extra=''):
    return write_tiny_config(path, data_root, max_iters, base=base, extra=f"""
        warmup_checkpoint = {warmup!r}
        load_from = {warmup!r}
        target_pipeline = [dict(type='LoadImageFromFile'), dict(type='RandomFlip', prob=0.5),
                           dict(type='PackSegInputs')]
        train_dataloader = dict(dataset=dict(
            _delete_=True, type='SourceTargetDataset',
            source=dict(type='SyntheticStreetsDataset', data_root={data_root!r},
                        data_prefix=dict(img_path='leftImg8bit/train',
                                         seg_map_path='gtFine/train'),
                        pipeline=train_pipeline),
            target=dict(type='SyntheticStreetsDataset', data_root={data_root!r},
                        with_uncertainty_gt=False,
                        data_prefix=dict(img_path='leftImg8bit/shift_train'),
                        pipeline=target_pipeline)))
        val_dataloader = dict(
            num_workers=0, persistent_workers=False,
            dataset=dict(data_root={data_root!r}, pipeline=test_pipeline,
                         data_prefix=dict(img_path='leftImg8bit/shift_val',
                                          seg_map_path='gtFine/shift_val')))
        test_dataloader = val_dataloader
        param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
        default_hooks = dict(logger=dict(interval=1),
                             checkpoint=dict(interval=1, max_keep_ckpts=10),
                             visualization=dict(type='SegVisualizationHook'))
        """ + extra)


def test_proda_resumes_identically_and_distils(tiny_data_root, tmp_path):
    warmup = save_config_model(WARMUP, str(tmp_path / 'warmup.pth'), seed=3)
    extra = f"""
        model = dict(pseudo_labeller=dict(checkpoint={warmup!r}),
                     decode_head=dict(dropout_ratio=0.0))
        custom_hooks = [dict(type='PrototypeHook', init_batches=1, min_pixels=1,
                             momentum_half_life=1, prototype_half_life=1)]
        """
    straight = _tiny_uda_config(str(tmp_path / 'a.py'), tiny_data_root, warmup, 3, extra=extra)
    run_tool(['tools/train.py', straight, '--work-dir', str(tmp_path / 'a')])
    two = _tiny_uda_config(str(tmp_path / 'b.py'), tiny_data_root, warmup, 2, extra=extra)
    run_tool(['tools/train.py', two, '--work-dir', str(tmp_path / 'b')])
    proc = run_tool(['tools/train.py', straight, '--work-dir', str(tmp_path / 'b'), '--resume'])
    assert 'initialised' not in (proc.stdout + proc.stderr).split('Load checkpoint')[-1]
    a = torch.load(str(tmp_path / 'a' / 'iter_3.pth'), weights_only=False)
    b = torch.load(str(tmp_path / 'b' / 'iter_3.pth'), weights_only=False)
    for key in ('prototypes', 'initialised', 'initial_prototypes',
                'prototype_start_share'):
        assert torch.equal(a['prototype_hook'][key], b['prototype_hook'][key]), key
    assert a['prototype_hook']['momentum_start_share'] == 0.5 ** 3
    for name, value in a['prototype_hook']['momentum_network'].items():
        assert torch.allclose(value.float(), b['prototype_hook']['momentum_network'][name].float(),
                              atol=1e-6), name
    for name, value in a['state_dict'].items():
        assert torch.allclose(value.float(), b['state_dict'][name].float(), atol=1e-6), name
    assert not any(k.startswith(('pseudo_labeller', 'prototype')) for k in a['state_dict'])
    # the movement of both is logged
    log = (proc.stdout + proc.stderr).split('Load checkpoint')[-1]
    for key in ('momentum_start_share', 'prototype_start_share', 'prototype_drift'):
        assert key in log, key
    # the distillation stage: the stage-1 model's flip-averaged prediction
    # teaches a student (from the warm-up weights) on the target, without KL
    cfg = _tiny_uda_config(str(tmp_path / 'd.py'), tiny_data_root, warmup, 2,
                           base=PRODA_DISTILL, extra=f"""
        model = dict(teacher=dict(model=dict(
            checkpoint={str(tmp_path / 'a' / 'iter_3.pth')!r})))
        """)
    proc = run_tool(['tools/train.py', cfg, '--work-dir', str(tmp_path / 'd')])
    log = proc.stdout + proc.stderr
    for key in ('decode.loss_ce', 'target.decode.loss_ce', 'mIoU'):
        assert key in log, key
    assert 'loss_kd' not in log
    state = torch.load(str(tmp_path / 'd' / 'iter_2.pth'), weights_only=False)['state_dict']
    assert set(state) == set(a['state_dict'])


def _benchmark():
    """benchmarks/domain_adaptation.py as a module."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'domain_adaptation', osp.join(ROOT, 'benchmarks', 'domain_adaptation.py'))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_stage1_config_is_the_benchmarked_recipe():
    """The stage-1 config is the ablation's full stage-1 row, with its
    hook's half-lives, and that row teaches the benchmark's distillation."""
    from mmengine.config import Config
    bench = _benchmark()
    cfg = Config.fromfile(PRODA)
    assert bench.DISTILL_FROM == '+ structure learning (ProDA stage 1)'
    for key, value in bench.STAGE1[bench.DISTILL_FROM][1].items():
        assert cfg.model[key] == value, key
    iters = cfg.train_cfg.max_iters
    assert cfg.custom_hooks == bench._hooks({}, iters)
    assert Config.fromfile(PRODA_DISTILL).model.pseudo_label_threshold == 0.95


def test_each_distillation_round_learns_from_the_round_before():
    """The second and third distillation configs: teacher and start are the
    previous round's final checkpoint where tools/train.py writes it
    (work_dirs/<config name>/), and nothing else changes."""
    from mmengine.config import Config
    first = Config.fromfile(PRODA_DISTILL)
    for config, previous in ((PRODA_DISTILL2, PRODA_DISTILL),
                             (PRODA_DISTILL3, PRODA_DISTILL2)):
        cfg = Config.fromfile(config)
        name = osp.splitext(osp.basename(previous))[0]
        final = f'work_dirs/{name}/iter_{Config.fromfile(previous).train_cfg.max_iters}.pth'
        assert cfg.load_from == cfg.model.teacher.model.checkpoint == final, config
        for key in ('model', 'optim_wrapper', 'train_dataloader', 'train_cfg'):
            ours, theirs = cfg[key].to_dict(), first[key].to_dict()
            if key == 'model':
                ours['teacher']['model'].pop('checkpoint')
                theirs['teacher']['model'].pop('checkpoint')
            assert ours == theirs, (config, key)


def _distill_optimizer_and_loss(teacher: str, updates: dict):
    """The distillation config with ``updates`` merged: its student's
    optimizer, trainable parameters by name, and decode-head loss."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper

    from mmseg.registry import MODELS
    from mmseg_uncert.models.segmentors import mmseg_scope
    cfg = Config.fromfile(PRODA_DISTILL)
    cfg.merge_from_dict({'model.teacher.model.config': WARMUP,
                         'model.teacher.model.checkpoint': teacher, **updates})
    with mmseg_scope():
        model = MODELS.build(cfg.model)
        optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    student = {name: p for name, p in model.named_parameters()
               if not name.startswith('teacher.')}
    return optimizer, student, model.decode_head.loss_decode


def test_distillation_recipe_and_its_benchmarked_variants(tmp_path):
    """The distillation config's student learns with plain cross-entropy
    (ProDA's) under AdamW; the benchmark's variants give it the stage-1
    source loss's class weights, or ProDA's SGD with the decode head at 10x
    the backbone's rate; the frozen teacher is never optimised."""
    import torch.nn.functional as F
    bench = _benchmark()
    teacher = save_config_model(WARMUP, str(tmp_path / 'teacher.pth'), seed=3)
    logits = torch.randn(2, 19, 4, 5)
    labels = torch.randint(0, 19, (2, 4, 5))   # every class weight comes in
    optimizer, student, loss = _distill_optimizer_and_loss(teacher, {})
    assert isinstance(optimizer, torch.optim.AdamW)
    assert torch.allclose(loss(logits, labels), F.cross_entropy(logits, labels),
                          rtol=1e-6)
    _, _, weighted = _distill_optimizer_and_loss(teacher, bench.CLASS_WEIGHTED_CE)
    weight = torch.tensor(bench.CLASS_WEIGHTED_CE['model.decode_head.loss_decode']
                          ['class_weight'])
    # PyTorch's weighted mean: divided by the labels' summed weights
    assert torch.allclose(weighted(logits, labels),
                          F.cross_entropy(logits, labels, weight=weight), rtol=1e-6)
    optimizer, student, _ = _distill_optimizer_and_loss(teacher, bench.PRODA_SGD)
    assert isinstance(optimizer, torch.optim.SGD)
    rate = {id(p): group['lr'] for group in optimizer.param_groups for p in group['params']}
    for group in optimizer.param_groups:
        assert (group['momentum'], group['weight_decay']) == (0.9, 2e-4)
    assert set(rate) == {id(p) for p in student.values()}
    for name, p in student.items():
        # lr_mult times the rate: a float product, one rounding from 6e-3
        expected = 6e-3 if name.startswith('decode_head.') else 6e-4
        assert rate[id(p)] == pytest.approx(expected, rel=1e-15), name


def test_cbst_trains_and_resumes_through_the_runner(tiny_data_root, tmp_path):
    """CBST self-training from the stage-1 config with tools/train.py: the
    hook's thresholds go into the checkpoint, and a resumed run takes them
    from there instead of computing them again."""
    warmup = save_config_model(WARMUP, str(tmp_path / 'warmup.pth'), seed=3)
    extra = f"""
        model = dict(pseudo_labeller=dict(checkpoint={warmup!r}), rectify=False,
                     structure_weight=0.0, confidence_threshold=0.0,
                     class_balanced_portion=0.5)
        custom_hooks = [dict(type='ClassBalancedThresholdHook', init_batches=1)]
        """
    two = _tiny_uda_config(str(tmp_path / 'a.py'), tiny_data_root, warmup, 2, extra=extra)
    proc = run_tool(['tools/train.py', two, '--work-dir', str(tmp_path / 'a')])
    assert 'ClassBalancedThresholdHook: portion 0.5' in proc.stdout + proc.stderr
    saved = torch.load(str(tmp_path / 'a' / 'iter_2.pth'), weights_only=False)
    thresholds = saved['class_balanced_thresholds']
    assert thresholds.shape == (19,)
    kept = torch.isfinite(thresholds)
    assert kept.any() and ((thresholds[kept] > 0) & (thresholds[kept] <= 1)).all()
    assert 'class_thresholds' not in saved['state_dict']
    three = _tiny_uda_config(str(tmp_path / 'b.py'), tiny_data_root, warmup, 3, extra=extra)
    proc = run_tool(['tools/train.py', three, '--work-dir', str(tmp_path / 'a'), '--resume'])
    assert 'ClassBalancedThresholdHook: portion' not in (
        proc.stdout + proc.stderr).split('Load checkpoint')[-1]
    resumed = torch.load(str(tmp_path / 'a' / 'iter_3.pth'), weights_only=False)
    assert torch.equal(resumed['class_balanced_thresholds'], thresholds)
