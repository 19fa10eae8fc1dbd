"""Run UncertaintyMetric and AnomalyMetric (SegmentMeIfYouCan's protocol, its
component metrics at the run's best-F1 threshold) over 5 samples as mmengine's
test loop would, on one process or under torchrun (gloo), and write rank 0's
metrics as JSON."""
import json
import os
import sys

import torch.distributed as dist
from mmengine.dataset import DefaultSampler

from mmseg_uncert.evaluation import AnomalyMetric, UncertaintyMetric

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from metric_samples import random_samples  # noqa: E402


def main(out: str) -> None:
    if 'WORLD_SIZE' in os.environ:
        dist.init_process_group('gloo')
    samples = random_samples(11, n=5)
    indices = list(DefaultSampler(samples, shuffle=False))
    result = {}
    for metric in (UncertaintyMetric(scores=('max_prob', 'entropy', 'std')),
                   AnomalyMetric(scores=('max_prob', 'std'), min_gt_component_size=0,
                                 min_pred_component_size=2)):
        for i in range(0, len(indices), 2):
            metric.process({}, [samples[j] for j in indices[i:i + 2]])
        result.update(metric.evaluate(len(samples)))
    if not dist.is_initialized() or dist.get_rank() == 0:
        with open(out, 'w') as f:
            json.dump(result, f)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == '__main__':
    main(sys.argv[1])
