"""ClassBalancedThresholdHook: CBST's thresholds against sorting, saved, restored."""
import math

import numpy as np
import pytest
import torch

from mmseg.registry import DATASETS

from mmseg_uncert.models.segmentors import mmseg_scope

from helpers.proda import _cbst_model, _proda


def test_class_balanced_thresholds_against_sorting():
    from mmseg_uncert.engine.hooks.class_balanced_threshold_hook import (
        class_balanced_thresholds, class_confidence_histograms)
    g = torch.Generator().manual_seed(4)
    prob = torch.rand(3, 4, 10, 12, generator=g) ** 3
    prob[0, :, 0, 0] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # a confidence of exactly 1
    prob[:, 3] = 0  # class 3 is never the argmax
    prob = prob / prob.sum(1, keepdim=True)
    valid = torch.rand(3, 10, 12, generator=g) > 0.2
    bins = 1000
    histograms = class_confidence_histograms(prob, valid, bins)
    confidence, label = prob.max(1)
    for portion in (0.2, 0.5, 1.0):
        thresholds = class_balanced_thresholds(histograms, portion)
        for k in range(3):
            values = np.sort(confidence[valid & (label == k)].numpy())[::-1]
            true = values[math.ceil(portion * len(values)) - 1]
            # the lower edge of the bin holding the true value
            assert thresholds[k] <= true < thresholds[k] + 1 / bins + 1e-12, (portion, k)
            # the kept share of class k is at least the portion
            assert (values >= thresholds[k].item()).mean() >= portion
        assert thresholds[3] == float('inf')


def test_cbst_hook_computes_saves_and_restores_thresholds(tiny_data_root, tmp_path):
    """The hook's thresholds equal sorting the pseudo-labeller's confidences
    over the same target images; a resumed run takes them from the
    checkpoint."""
    from mmseg_uncert.engine import ClassBalancedThresholdHook
    model = _cbst_model(tmp_path, portion=0.4)
    with mmseg_scope():
        target = DATASETS.build(dict(
            type='SyntheticStreetsDataset', data_root=tiny_data_root,
            with_uncertainty_gt=False, data_prefix=dict(img_path='leftImg8bit/shift_train'),
            pipeline=[dict(type='LoadImageFromFile'), dict(type='PackSegInputs')]))

    class Loader:
        batch_size = 2
        dataset = type('Pair', (), dict(target=target))()

    class Logger:
        def info(self, message):
            self.message = message

    class Runner:
        train_dataloader = Loader()
        logger = Logger()
    runner = Runner()
    runner.model = model
    hook = ClassBalancedThresholdHook(init_batches=2, bins=100000)
    hook.before_train(runner)
    from mmengine.dataset import pseudo_collate
    confidences, labels = [], []
    with torch.no_grad():
        for i in range(len(target)):
            batch = model.data_preprocessor(pseudo_collate([target[i]]), False)
            p = model.pseudo_labeller.inference(
                batch['inputs'], [s.metainfo for s in batch['data_samples']]).softmax(1)
            c, k = p.max(1)
            confidences.append(c.flatten())
            labels.append(k.flatten())
    # init_batches x batch size = 4 of the split's images, a fixed subset
    from mmseg_uncert.engine.hooks.prototype_hook import target_subset
    subset = target_subset(len(target), 4)
    confidence = torch.cat([confidences[i] for i in subset])
    label = torch.cat([labels[i] for i in subset])
    for k in range(5):
        values = np.sort(confidence[label == k].numpy())[::-1]
        got = model.class_thresholds[k].item()
        if len(values) == 0:
            assert got == float('inf')
            continue
        true = values[math.ceil(0.4 * len(values)) - 1]
        assert got <= true < got + 1e-5 + 1e-9
    assert 'portion 0.4' in runner.logger.message
    checkpoint = {}
    hook.before_save_checkpoint(runner, checkpoint)
    saved = checkpoint['class_balanced_thresholds']
    fresh = _cbst_model(tmp_path, portion=0.4)
    runner.model = fresh
    other = ClassBalancedThresholdHook(init_batches=2)
    other.after_load_checkpoint(runner, checkpoint)
    other.before_train(runner)
    assert torch.equal(fresh.class_thresholds, saved)
    # a model without class-balanced thresholds is refused by name
    runner.model = _proda(tmp_path, rectify=False, structure_weight=0.0)
    with pytest.raises(TypeError, match='class_balanced_portion set'):
        ClassBalancedThresholdHook().before_train(runner)
