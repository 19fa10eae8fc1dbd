"""Importing the package registers its parts; configs find them."""
import importlib.metadata
import subprocess
import sys

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmseg.registry import MODELS, RUNNERS

import mmseg_uncert
from mmseg_uncert.engine import CompatRunner

from conftest import ROOT, tool_env


def test_version_and_runner_registered():
    assert mmseg_uncert.__version__ == importlib.metadata.version('mmseg-uncert')
    assert RUNNERS.get('CompatRunner') is CompatRunner


def test_custom_imports_loads_the_package(tmp_path):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("custom_imports = dict(imports=['mmseg_uncert'], "
                   "allow_failed_imports=False)\n")
    code = ('import sys; from mmengine.config import Config; '
            f'Config.fromfile({str(cfg)!r}); '
            "print('mmseg_uncert' in sys.modules)")
    out = subprocess.run([sys.executable, '-c', code], env=tool_env(), cwd=ROOT,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'True'


def test_unknown_component_names_type_and_scope():
    with DefaultScope.overwrite_default_scope('mmseg'):
        with pytest.raises(KeyError) as info:
            MODELS.build(dict(type='NoSuchDualHead'))
    assert 'NoSuchDualHead' in str(info.value)
    assert 'mmseg' in str(info.value)


def test_runner_type_from_config_builds_compat_runner(tmp_path):
    cfg = Config(dict(runner_type='CompatRunner'))
    assert RUNNERS.get(cfg.runner_type) is CompatRunner


def test_domain_adaptation_parts_registered():
    from mmseg.registry import DATASETS, HOOKS
    from mmseg_uncert.datasets import SourceTargetDataset
    from mmseg_uncert.engine import ClassBalancedThresholdHook, PrototypeHook
    from mmseg_uncert.models import SourceTargetDataPreProcessor
    from mmseg_uncert.models.losses import SymmetricCrossEntropyLoss
    from mmseg_uncert.models.segmentors import ProDASegmentor
    assert HOOKS.get('PrototypeHook') is PrototypeHook
    assert HOOKS.get('ClassBalancedThresholdHook') is ClassBalancedThresholdHook
    assert DATASETS.get('SourceTargetDataset') is SourceTargetDataset
    assert MODELS.get('ProDASegmentor') is ProDASegmentor
    assert MODELS.get('SymmetricCrossEntropyLoss') is SymmetricCrossEntropyLoss
    assert MODELS.get('SourceTargetDataPreProcessor') is SourceTargetDataPreProcessor


def test_bootstrap_sampler_builds_from_an_mmseg_config():
    from mmseg.registry import DATA_SAMPLERS
    from mmseg_uncert.datasets import BootstrapSampler
    with DefaultScope.overwrite_default_scope('mmseg'):
        sampler = DATA_SAMPLERS.build(dict(type='BootstrapSampler', dataset=list(range(5)),
                                           seed=1))
    assert isinstance(sampler, BootstrapSampler)
    assert sampler.sample == BootstrapSampler(list(range(5)), seed=1).sample


def test_anomaly_benchmark_parts_registered():
    from mmseg.registry import DATASETS, METRICS
    from mmseg_uncert.datasets import (FishyscapesLostAndFoundDataset,
                                       SegmentMeIfYouCanDataset,
                                       StreetHazardsDataset)
    from mmseg_uncert.evaluation import AnomalyMetric
    assert METRICS.get('AnomalyMetric') is AnomalyMetric
    assert DATASETS.get('SegmentMeIfYouCanDataset') is SegmentMeIfYouCanDataset
    assert (DATASETS.get('FishyscapesLostAndFoundDataset')
            is FishyscapesLostAndFoundDataset)
    assert DATASETS.get('StreetHazardsDataset') is StreetHazardsDataset
