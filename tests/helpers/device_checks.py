"""A training step and a test step of every segmentor the package registers,
on a given device, in a given precision, from random initialisation.

Shared by the CPU tests (``model.to(torch.float64)``: a submodule that the
module traversal misses stays float32, and its first op with the float64
input fails) and ``tests/test_cuda.py`` (the same steps on a GPU, with and
without mixed precision).
"""
from __future__ import annotations

import contextlib
import os.path as osp

import torch
from mmengine.config import Config, ConfigDict
from mmengine.logging import MessageHub
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.structures import PixelData
from torch import nn

from mmseg.models.segmentors import BaseSegmentor
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmseg_uncert.engine import PrototypeHook
from mmseg_uncert.evaluation import UncertaintyMetric
from mmseg_uncert.models.segmentors import mmseg_scope

from helpers.members import member_model_cfg, member_specs, save_member

NUM_CLASSES = 5
SIZE = (64, 128)
#: the segmentors below, by type; inference-only ones have no training step
SEGMENTORS = ('UncertaintyEncoderDecoder', 'UncertaintyCascadeEncoderDecoder',
              'EnsembleSegmentor', 'MCDropoutSegmentor', 'TTASegmentor',
              'EnsembleDistiller', 'ProDASegmentor', 'CalibratedSegmentor')
INFERENCE_ONLY = ('EnsembleSegmentor', 'MCDropoutSegmentor', 'TTASegmentor',
                  'CalibratedSegmentor')


def registered_segmentors() -> set[str]:
    """Every segmentor type this package registers in mmseg's MODELS."""
    return {name for name, cls in MODELS.module_dict.items()
            if cls.__module__.startswith('mmseg_uncert')
            and isinstance(cls, type) and issubclass(cls, BaseSegmentor)}


def _dual_head(cfg: dict) -> dict:
    return dict(type='DualHead', head=cfg['decode_head'],
                uncertainty_names=('std', 'epistemic'),
                loss_uncertainty=dict(type='UncertaintyRegressionLoss',
                                      value_range=[(0.0, 0.5), (0.0, 2.0)]))


def build_segmentor(name: str, tmp_dir: str) -> nn.Module:
    """A small instance of segmentor type ``name`` (MobileNetV3-small + FCN
    parts, 5 classes), seeded; ProDA's comes with its prototype bank."""
    torch.manual_seed(0)
    cfg = member_model_cfg(NUM_CLASSES)
    if name == 'UncertaintyEncoderDecoder':
        cfg['decode_head'] = dict(type='HeteroscedasticHead', head=cfg['decode_head'],
                                  num_inference_samples=4,
                                  loss_decode=dict(type='AttenuatedCrossEntropyLoss',
                                                   num_samples=3))
        cfg['type'] = name
    elif name == 'UncertaintyCascadeEncoderDecoder':
        # OCRNet's cascade on the member's features: FCN, then a DualHead'd OCR
        ocr = dict(type='OCRHead', in_channels=576, in_index=0, channels=32,
                   ocr_channels=16, num_classes=NUM_CLASSES, dropout_ratio=0.1,
                   norm_cfg=dict(type='BN'))
        cfg.update(type=name, num_stages=2,
                   decode_head=[cfg['decode_head'], _dual_head(dict(decode_head=ocr))])
    elif name == 'EnsembleSegmentor':
        cfg = dict(type=name, members=member_specs(tmp_dir, 2, NUM_CLASSES))
    elif name == 'MCDropoutSegmentor':
        cfg = dict(type=name, model=member_specs(tmp_dir, 1, NUM_CLASSES)[0],
                   num_samples=3)
    elif name == 'TTASegmentor':
        cfg = dict(type=name, model=member_specs(tmp_dir, 1, NUM_CLASSES)[0],
                   scales=(0.75, 1.0), flips=(False, True))
    elif name == 'EnsembleDistiller':
        cfg['decode_head'] = _dual_head(cfg)
        cfg.update(type=name, teacher=member_specs(tmp_dir, 2, NUM_CLASSES),
                   pairwise_loss=dict(type='PairwiseKDLoss'),
                   mimic_loss=dict(type='FeatureMimicLoss'),
                   kd_loss=dict(type='PixelKDLoss', temperature=2.0))
    elif name == 'ProDASegmentor':
        warmup = save_member(osp.join(tmp_dir, 'warmup.pth'), seed=0,
                             num_classes=NUM_CLASSES)
        cfg.update(type=name, data_preprocessor=dict(cfg['data_preprocessor'], size=SIZE),
                   pseudo_labeller=dict(model=member_model_cfg(NUM_CLASSES),
                                        checkpoint=warmup),
                   structure_weight=1.0)
    elif name == 'CalibratedSegmentor':
        # local temperature scaling: a network over the logits and the image
        spec = member_specs(tmp_dir, 1, NUM_CLASSES)[0]
        config = osp.join(tmp_dir, 'member_config.py')
        Config(dict(model=spec['model'])).dump(config)
        cfg = dict(type=name, model=dict(config=config, checkpoint=spec['checkpoint']),
                   calibrator=dict(type='LocalTemperatureScaling', temperature=1.3))
    else:
        raise KeyError(f'no small instance of {name}: add one to {__file__}')
    with mmseg_scope():
        model = MODELS.build(ConfigDict(cfg))
    if hasattr(model, 'init_weights'):
        model.init_weights()
    if name == 'ProDASegmentor':
        bank = model.prototype_bank
        bank.restart(model.network(), PrototypeHook().momentum)
        g = torch.Generator().manual_seed(1)
        bank.prototypes.copy_(torch.randn(bank.prototypes.shape, generator=g))
        bank.initialised.fill_(True)
    return model


def batch(seed: int, n: int = 2, labelled: bool = True) -> dict:
    """Images (uint8) and data samples with labels and uncertainty ground truth."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(n):
        s = SegDataSample(metainfo=dict(img_shape=SIZE, pad_shape=SIZE, ori_shape=SIZE,
                                        padding_size=[0, 0, 0, 0]))
        if labelled:
            label = torch.randint(0, NUM_CLASSES, (1, *SIZE), generator=g)
            label[:, :4] = 255
            s.gt_sem_seg = PixelData(data=label)
            s.gt_ood = PixelData(data=(torch.rand(1, *SIZE, generator=g) < 0.05).long())
            s.gt_aleatoric = PixelData(data=torch.rand(1, *SIZE, generator=g)
                                       * (torch.rand(1, *SIZE, generator=g) < 0.2))
        samples.append(s)
    return dict(inputs=[torch.randint(0, 256, (3, *SIZE), generator=g).byte()
                        for _ in range(n)], data_samples=samples)


def tensors_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, frozen children's included."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def check_placement(model: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Every floating parameter and buffer is on ``device`` in ``dtype``."""
    for key, value in tensors_of(model).items():
        assert value.device == device, f'{key} is on {value.device}, not {device}'
        if value.is_floating_point():
            assert value.dtype == dtype, f'{key} is {value.dtype}, not {dtype}'


def _autocast(device: torch.device, amp_dtype: torch.dtype | None):
    """Autocast to ``amp_dtype``, or nothing when it is None."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


def train_step(model: nn.Module, name: str, device: torch.device,
               amp_dtype: torch.dtype | None = None, seed: int = 0
               ) -> dict[str, torch.Tensor]:
    """One optimizer step through mmengine's ``train_step`` (with
    ``AmpOptimWrapper`` on a GPU when ``amp_dtype`` is given); ProDA's
    PrototypeHook then updates its momentum network and prototypes.
    Returns the logged losses."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.01)
    if amp_dtype is not None and device.type == 'cuda':
        optim_wrapper = AmpOptimWrapper(optimizer=optimizer, dtype=amp_dtype)
    else:
        optim_wrapper = OptimWrapper(optimizer=optimizer)
    data = batch(seed)
    if name == 'ProDASegmentor':
        data = dict(source=data, target=batch(seed + 1, labelled=False))
    model.train()
    # on a GPU the AmpOptimWrapper autocasts the step itself
    with _autocast(device, amp_dtype if device.type == 'cpu' else None):
        log = model.train_step(data, optim_wrapper)
    if name == 'ProDASegmentor':
        hook = PrototypeHook()
        hook.bank = bank = model.prototype_bank
        # the model's prototypes as the hook's starting ones
        hook.initial_update(bank.prototypes.detach().double().clone(),
                            torch.ones(bank.num_classes, dtype=torch.float64,
                                       device=bank.prototypes.device))

        class Runner:
            pass

        runner = Runner()
        runner.model = model
        runner.message_hub = MessageHub.get_current_instance()
        hook.after_train_iter(runner, 0)
    return log


def test_step(model: nn.Module, device: torch.device,
              amp_dtype: torch.dtype | None = None, seed: int = 5) -> list:
    """mmengine's ``test_step`` on a labelled batch; the data samples."""
    model.eval()
    with _autocast(device, amp_dtype), torch.no_grad():
        return model.test_step(batch(seed))


def evaluate(samples: list, scores: tuple[str, ...]) -> dict[str, float]:
    """UncertaintyMetric over data samples, as mmengine's evaluator feeds it."""
    metric = UncertaintyMetric(scores=scores)
    metric.process({}, [s.to_dict() for s in samples])
    return metric.evaluate(len(samples))


def scores_of(samples: list) -> tuple[str, ...]:
    """The built-in scores and every map the samples carry."""
    maps = samples[0].get('pred_uncertainty')
    return ('max_prob', 'entropy', *(maps.keys() if maps is not None else ()))


def run_steps(name: str, tmp_dir: str, device: torch.device,
              dtype: torch.dtype = torch.float32,
              amp_dtype: torch.dtype | None = None) -> dict:
    """Build ``name``, move it to ``device`` and ``dtype``, train one step
    (unless inference-only) and test one batch with UncertaintyMetric.

    Returns ``dict(model, losses, samples, metrics)`` after checking that
    every parameter and buffer (frozen children's too) stayed on the device
    in the precision, the losses are finite and in (at least) float32, and
    the predictions are where the model ran.
    """
    model = build_segmentor(name, tmp_dir).to(device=device, dtype=dtype)
    check_placement(model, device, dtype)
    losses = {}
    if name not in INFERENCE_ONLY:
        losses = train_step(model, name, device, amp_dtype)
        for key, value in losses.items():
            assert torch.isfinite(value).all(), f'{name}: {key} = {value}'
            if 'loss' in key:
                assert value.dtype == torch.promote_types(dtype, torch.float32), \
                    f'{name}: {key} is {value.dtype}'
        check_placement(model, device, dtype)
    samples = test_step(model, device, amp_dtype)
    for sample in samples:
        assert sample.seg_logits.data.device.type == device.type
        assert sample.seg_logits.data.shape == (NUM_CLASSES, *SIZE)
        assert sample.pred_sem_seg.data.device.type == device.type
    metrics = evaluate(samples, scores_of(samples))
    assert 0 <= metrics['ECE'] <= 1 and torch.isfinite(torch.tensor(metrics['NLL']))
    return dict(model=model, losses=losses, samples=samples, metrics=metrics)
