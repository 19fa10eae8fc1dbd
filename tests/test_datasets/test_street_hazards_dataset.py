"""StreetHazardsDataset: 1-based labels, the anomaly as gt_ood, through the metric."""
import numpy as np
import torch

import mmseg_uncert  # noqa: F401
from mmseg_uncert.evaluation import AnomalyMetric

from helpers.anomaly_datasets import H, W, _dataset, _street_hazards_root


def test_street_hazards_maps_the_1_based_labels_and_the_anomaly(tmp_path):
    root = str(tmp_path / 'streethazards')
    labels = _street_hazards_root(root)
    dataset, cfg = _dataset('street_hazards.py', root)
    assert len(dataset) == 2
    assert len(dataset.metainfo['classes']) == 13
    for index, name in enumerate(sorted(labels)):
        sample = dataset[index]['data_samples']
        raw = labels[name].astype(np.int64)
        # 1..13 -> the 13 known classes 0..12; 0 and the anomaly (14) ignored
        expected = np.where((raw == 0) | (raw == 14), 255, raw - 1)
        np.testing.assert_array_equal(sample.gt_sem_seg.data[0].numpy(),
                                      expected)
        np.testing.assert_array_equal(sample.gt_ood.data[0].numpy(),
                                      (raw == 14).astype(np.uint8))
    assert [m.type for m in cfg.test_evaluator] == ['IoUMetric', 'AnomalyMetric']


def test_street_hazards_samples_run_through_the_metric(tmp_path):
    root = str(tmp_path / 'streethazards')
    labels = _street_hazards_root(root)
    dataset, _ = _dataset('street_hazards.py', root)
    metric = AnomalyMetric(protocol='streethazards', scores=['max_prob'])
    for index, name in enumerate(sorted(labels)):
        sample = dataset[index]['data_samples'].to_dict()
        # a model sure of class 0 everywhere but on the anomaly: perfect
        logits = torch.zeros(13, H, W)
        logits[0] = torch.where(torch.from_numpy(labels[name] == 14), 0.0, 9.0)
        sample['seg_logits'] = dict(data=logits)
        metric.process({}, [sample])
    out = metric.evaluate(len(dataset))
    assert out['streethazards/num_images'] == 2
    assert out['streethazards/AUROC/max_prob'] == 1.0
    assert out['streethazards/AUPR/max_prob'] == 1.0
    assert out['streethazards/FPR95/max_prob'] == 0.0
