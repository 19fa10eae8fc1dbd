"""SummedMetric: sums over ranks, without the samples the sampler repeats.

Through UncertaintyMetric and AnomalyMetric, which reduce each sample to
sums: a two-process gloo run equals one process, and the repeated sample of
the last rank is dropped.
"""
import json
import math

import pytest

import mmseg_uncert  # noqa: F401
from mmseg_uncert.evaluation.metrics import summed_metric

from conftest import run_tool
from helpers.anomaly_samples import _metric, _random_run, _run, _sample


def test_repeated_sample_of_the_last_rank_is_dropped(monkeypatch):
    gts, scores = _random_run(4, num_images=2)
    samples = [_sample(g, sc, img=f'{i}.png')
               for i, (g, sc) in enumerate(zip(gts, scores))]
    expected = _run(_metric(), samples[1:])
    # rank 1 of 2 with 3 images: DefaultSampler gives it positions 1 and 3;
    # position 3, beyond the data set, repeats image 0 and must not count
    monkeypatch.setattr(summed_metric, 'get_dist_info', lambda: (1, 2))
    metric = _metric()
    metric.process({}, [samples[1]])
    metric.process({}, [samples[0]])
    assert metric.evaluate(3) == expected


def test_two_process_gloo_run_equals_one_process(tmp_path):
    """5 images on 2 ranks: DefaultSampler repeats one; it must not count."""
    one, two = str(tmp_path / 'one.json'), str(tmp_path / 'two.json')
    run_tool(['tests/helpers/metric_ddp.py', one])
    run_tool(['-m', 'torch.distributed.run', '--nproc_per_node=2',
              '--master_port=29657', 'tests/helpers/metric_ddp.py', two])
    a, b = json.load(open(one)), json.load(open(two))
    assert a.keys() == b.keys()
    assert 'smiyc/sIoU/std' in a and not math.isnan(a['smiyc/sIoU/std'])
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-12, nan_ok=True), key
