"""The dependency check names a wrong version and mmcv-lite."""
import importlib.metadata

import pytest

from mmseg_uncert.utils import dependencies


@pytest.mark.parametrize('dist,version,expected', [
    ('mmcv', '2.2.0', 'mmcv 2.2.0 is installed, but >=2.0.0rc4,<2.2.0'),
    ('mmengine', '1.0.0', 'mmengine 1.0.0 is installed, but >=0.10.0,<1.0.0'),
    ('torch', '2.5.1', 'torch 2.5.1 is installed, but >=2.6.0'),
    ('mmsegmentation', None, 'mmsegmentation is not installed'),
])
def test_wrong_dependency_versions_are_named(monkeypatch, dist, version,
                                             expected):
    real = importlib.metadata.version

    def fake(name):
        if name == dist:
            if version is None:
                raise importlib.metadata.PackageNotFoundError(name)
            return version
        return real(name)

    monkeypatch.setattr(importlib.metadata, 'version', fake)
    with pytest.raises(ImportError) as info:
        dependencies.check_dependencies()
    assert expected in str(info.value)
    assert 'make setup' in str(info.value)


def test_mmcv_lite_is_named(monkeypatch):
    real = importlib.metadata.version

    def fake(name):
        if name == 'mmcv':
            raise importlib.metadata.PackageNotFoundError(name)
        return '2.1.0' if name == 'mmcv-lite' else real(name)

    monkeypatch.setattr(importlib.metadata, 'version', fake)
    with pytest.raises(ImportError, match='mmcv-lite is installed'):
        dependencies.check_dependencies()
