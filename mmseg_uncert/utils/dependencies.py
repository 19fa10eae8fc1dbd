"""Check the OpenMMLab stack before anything imports it.

mmseg imports ``mmcv.ops`` unguarded, so an ``mmcv-lite`` or an mmcv built
without its ops fails deep inside mmseg with a message about ``mmcv._ext``;
this check says what is wrong and how to fix it instead.
"""
from __future__ import annotations

import importlib
import importlib.metadata

from packaging.version import Version

FIX = ('run `make setup` (or `bash tools/setup_env.sh`), which installs the '
       'tested stack (constraints.txt) into .venv')

#: (distribution, lowest supported, first unsupported, why the bound).
#: setup.cfg's install_requires states the same ranges (a test keeps them
#: equal); constraints.txt pins the tested versions inside them.
SUPPORTED = (
    ('torch', '2.6.0', None,
     'mmseg_uncert.compat allow-lists checkpoint globals as (object, name) '
     'pairs, which torch.serialization.add_safe_globals takes since 2.6'),
    ('mmengine', '0.10.0', '1.0.0', 'mmseg 1.2 requires mmengine < 1.0'),
    ('mmcv', '2.0.0rc4', '2.2.0', 'mmseg 1.2.2 asserts mmcv < 2.2.0'),
    ('mmsegmentation', '1.2.0', '1.3.0', 'the plugin is built on mmseg 1.2'),
)


def _installed_version(dist: str) -> Version | None:
    try:
        return Version(importlib.metadata.version(dist))
    except importlib.metadata.PackageNotFoundError:
        return None


def check_dependencies() -> None:
    """Raise ImportError naming the missing or wrong package and the fix."""
    problems = []
    for dist, low, high, why in SUPPORTED:
        found = _installed_version(dist)
        if found is None and dist == 'mmcv' and _installed_version('mmcv-lite'):
            problems.append('mmcv-lite is installed, but mmseg needs the full '
                            'mmcv 2.1.0 with compiled ops')
        elif found is None:
            problems.append(f'{dist} is not installed')
        elif found < Version(low) or (high and found >= Version(high)):
            bound = f'>={low}' + (f',<{high}' if high else '')
            problems.append(f'{dist} {found} is installed, but {bound} is '
                            f'needed ({why})')
    if not problems:
        try:
            importlib.import_module('mmcv._ext')
        except ImportError as err:
            problems.append(
                f'mmcv was built without its compiled ops ({err}); rebuild it '
                'with MMCV_WITH_OPS=1 pip install --no-build-isolation '
                'mmcv==2.1.0')
    if problems:
        raise ImportError('mmseg_uncert cannot start: ' + '; '.join(problems)
                          + f'. Fix: {FIX}.')
