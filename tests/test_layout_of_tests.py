"""The tests mirror the package, one test file per module, as mmseg's own do.

``mmseg_uncert/a/b/c.py`` is tested in ``tests/test_a/test_b/test_c.py``; a
module tested in another module's file (a module and its small helper, say)
is named there by its dotted name, ``mmseg_uncert.a.b.c``. The test folders
have no ``__init__.py``, so pytest imports each test file by its name alone:
no two may share one.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from conftest import ROOT

PACKAGE = Path(ROOT) / 'mmseg_uncert'
TESTS = Path(ROOT) / 'tests'
NOT_TESTED = {'__init__.py', 'version.py'}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob('*.py') if p.name not in NOT_TESTED)


def _test_files() -> list[Path]:
    return sorted(TESTS.rglob('test_*.py'))


def _mirrored(module: Path) -> Path:
    """mmseg_uncert/a/b/c.py -> tests/test_a/test_b/test_c.py."""
    parts = module.relative_to(PACKAGE).parts
    return TESTS.joinpath(*(f'test_{part}' for part in parts))


def _dotted(module: Path) -> str:
    return '.'.join((PACKAGE.name, *module.relative_to(PACKAGE).with_suffix('').parts))


def test_every_module_has_its_test_file_or_is_named_in_one():
    texts = '\n'.join(p.read_text(encoding='utf-8') for p in _test_files())
    missing = [f'{_dotted(m)} (tests/{_mirrored(m).relative_to(TESTS)})'
               for m in _modules() if not _mirrored(m).is_file()
               and not re.search(rf'\b{re.escape(_dotted(m))}\b', texts)]
    assert not missing, (
        'modules with neither their test file nor their dotted name in a test '
        'file (add the file, or name the module in the docstring of the file '
        'that tests it):\n' + '\n'.join(missing))


def test_no_two_test_files_share_a_name():
    names = Counter(p.name for p in _test_files())
    shared = sorted(n for n, count in names.items() if count > 1)
    assert not shared, ('test files of one name (pytest imports them by name, '
                        f'from folders without __init__.py): {shared}')


def test_the_mirror_is_computed_as_documented():
    module = PACKAGE / 'models' / 'segmentors' / 'ensemble_distiller.py'
    assert module in _modules() and Path(__file__) in _test_files()
    assert _mirrored(module) == (TESTS / 'test_models' / 'test_segmentors'
                                 / 'test_ensemble_distiller.py')
    assert _dotted(module) == 'mmseg_uncert.models.segmentors.ensemble_distiller'
    assert _mirrored(PACKAGE / 'compat.py') == TESTS / 'test_compat.py'
