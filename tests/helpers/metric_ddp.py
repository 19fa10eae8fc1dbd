"""Run UncertaintyMetric over 5 samples as mmengine's test loop would, on one
process or under torchrun (gloo), and write rank 0's metrics as JSON."""
import json
import os
import sys

import torch.distributed as dist
from mmengine.dataset import DefaultSampler

from mmseg_uncert.evaluation import UncertaintyMetric

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from metric_samples import random_samples  # noqa: E402


def main(out: str) -> None:
    if 'WORLD_SIZE' in os.environ:
        dist.init_process_group('gloo')
    samples = random_samples(11, n=5)
    indices = list(DefaultSampler(samples, shuffle=False))
    metric = UncertaintyMetric(scores=('max_prob', 'entropy', 'std'))
    for i in range(0, len(indices), 2):
        metric.process({}, [samples[j] for j in indices[i:i + 2]])
    result = metric.evaluate(len(samples))
    if not dist.is_initialized() or dist.get_rank() == 0:
        with open(out, 'w') as f:
            json.dump(result, f)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == '__main__':
    main(sys.argv[1])
