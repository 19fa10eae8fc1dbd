"""Dependency metadata and tools/setup_env.sh.

setup.cfg states ranges (so the package installs next to a user's own torch),
constraints.txt the exact tested stack inside them, and the set-up script
installs with those constraints and stops on bad input with the reason and
the fix.
"""
import configparser
import hashlib
import importlib.metadata
import json
import os
import os.path as osp
import pathlib
import re
import shutil
import stat
import subprocess
import sys
import zipfile

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import ROOT
from mmseg_uncert.utils.dependencies import SUPPORTED

CONSTRAINTS = osp.join(ROOT, 'constraints.txt')
#: A user's own CUDA build of another torch 2.x, already installed.
USER_TORCH = '2.7.1+cu126'


def _fake_python(tmp_path, version: str) -> str:
    exe = tmp_path / 'python3'
    exe.write_text(f'#!/bin/sh\necho {version}\n')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(exe)


def _run_setup(tmp_path, python: str, **env_vars: str
               ) -> subprocess.CompletedProcess:
    env = dict(os.environ, VENV=str(tmp_path / 'venv'), PYTHON=python,
               **env_vars)
    return subprocess.run(['bash', 'tools/setup_env.sh'], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_unsupported_python_stops_with_reason_and_fix(tmp_path):
    proc = _run_setup(tmp_path, _fake_python(tmp_path, '3.8'))
    assert proc.returncode == 1
    assert 'setup failed: Python 3.8' in proc.stderr
    assert 'fix: set PYTHON=' in proc.stderr
    assert not (tmp_path / 'venv').exists()


def test_missing_python_stops_with_reason_and_fix(tmp_path):
    proc = _run_setup(tmp_path, str(tmp_path / 'no-such-python'))
    assert proc.returncode == 1
    assert 'not found' in proc.stderr and 'fix:' in proc.stderr


# --- the set-up script reads the constraints file -----------------------------

def test_torch_and_mmcv_versions_come_from_the_constraints_file(tmp_path):
    constraints = tmp_path / 'constraints.txt'
    constraints.write_text('torch == 9.9.9  # comment\nmmcv==8.8.8\n'
                           'mmsegmentation==7.7.7\n')
    proc = _run_setup(tmp_path, _fake_python(tmp_path, '3.8'),
                      CONSTRAINTS=str(constraints))
    assert proc.returncode == 1
    assert 'mmcv 8.8.8 and torch 9.9.9' in proc.stderr


def test_constraints_without_a_pin_stop_with_reason_and_fix(tmp_path):
    constraints = tmp_path / 'constraints.txt'
    constraints.write_text('torch==2.13.0\nmmcv>=2.0\n')
    proc = _run_setup(tmp_path, _fake_python(tmp_path, '3.11'),
                      CONSTRAINTS=str(constraints))
    assert proc.returncode == 1
    assert f'setup failed: {constraints} pins no version of mmcv' in proc.stderr
    assert "fix: add a line 'mmcv==VERSION'" in proc.stderr
    assert not (tmp_path / 'venv').exists()


def test_missing_constraints_file_stops_with_reason_and_fix(tmp_path):
    proc = _run_setup(tmp_path, _fake_python(tmp_path, '3.11'),
                      CONSTRAINTS=str(tmp_path / 'nope.txt'))
    assert proc.returncode == 1
    assert 'no constraints file' in proc.stderr and 'fix:' in proc.stderr


def test_a_changed_constraints_file_runs_the_setup_again(tmp_path):
    """The stamp covers constraints.txt: same files, nothing to do; a changed
    pin, the set-up runs (here it stops at once on the fake Python 3.8)."""
    venv = tmp_path / 'venv'
    (venv / 'bin').mkdir(parents=True)
    # stands in for the venv's interpreter: "import mmseg_uncert" succeeds
    _fake_python(venv / 'bin', '')
    (venv / 'bin' / 'python3').rename(venv / 'bin' / 'python')
    constraints = tmp_path / 'constraints.txt'
    shutil.copy(CONSTRAINTS, constraints)
    extras = 'tests,mim'
    # the files the script stamps, in its order
    stamped = b''.join(pathlib.Path(ROOT, name).read_bytes() for name in (
        'setup.cfg', 'pyproject.toml', str(constraints), 'tools/setup_env.sh'))
    (venv / '.setup-stamp').write_text(
        hashlib.sha256(stamped).hexdigest()[:16] + f'-{extras}\n')
    python = _fake_python(tmp_path, '3.8')

    proc = _run_setup(tmp_path, python, CONSTRAINTS=str(constraints),
                      EXTRAS=extras)
    assert proc.returncode == 0, proc.stderr
    assert 'is up to date' in proc.stdout

    pinned = constraints.read_text()
    constraints.write_text(re.sub(r'^torch==.*$', 'torch==2.12.0', pinned,
                                  flags=re.M))
    assert constraints.read_text() != pinned
    proc = _run_setup(tmp_path, python, CONSTRAINTS=str(constraints),
                      EXTRAS=extras)
    assert proc.returncode == 1
    assert 'setup failed: Python 3.8' in proc.stderr


# --- setup.cfg ranges, the import check and the tested pins agree -------------

def _setup_cfg_requirements() -> dict[str, list[Requirement]]:
    """install_requires and each extra of setup.cfg, parsed."""
    cfg = configparser.ConfigParser()
    cfg.read(osp.join(ROOT, 'setup.cfg'))
    groups = {'install_requires': cfg['options']['install_requires']}
    groups.update(cfg['options.extras_require'])
    return {group: [Requirement(line) for line in text.splitlines()
                    if line.strip()]
            for group, text in groups.items()}


def _constraint_pins() -> dict[str, Version]:
    pins = {}
    with open(CONSTRAINTS) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if not line:
                continue
            req = Requirement(line)
            (spec, ) = req.specifier  # one exact pin per line
            assert spec.operator == '==', f'constraints.txt: {line!r} is no pin'
            pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


def test_setup_cfg_states_the_ranges_the_import_check_enforces():
    install = {canonicalize_name(r.name): r
               for r in _setup_cfg_requirements()['install_requires']}
    for dist, low, high, _ in SUPPORTED:
        expected = SpecifierSet(f'>={low}' + (f',<{high}' if high else ''))
        assert install[dist].specifier == expected, (
            f'setup.cfg requires {install[dist]}, the import check '
            f'(mmseg_uncert/utils/dependencies.py) {dist}{expected}')


def test_constraints_pin_every_requirement_inside_its_range():
    pins = _constraint_pins()
    for group, requirements in _setup_cfg_requirements().items():
        for req in requirements:
            name = canonicalize_name(req.name)
            assert name in pins, f'constraints.txt pins no {name} ({group})'
            assert req.specifier.contains(pins[name], prereleases=True), (
                f'constraints.txt pins {name}=={pins[name]}, outside '
                f'setup.cfg\'s {req} ({group})')
    for dist, low, high, _ in SUPPORTED:
        assert Version(low) <= pins[dist] < Version(high or '9999')


def test_onnx_packages_are_test_only_requirements():
    groups = _setup_cfg_requirements()
    names = {g: {canonicalize_name(r.name) for r in reqs}
             for g, reqs in groups.items()}
    assert {'onnx', 'onnxscript', 'onnxruntime'} <= names['tests']
    assert not {'onnx', 'onnxscript', 'onnxruntime'} & names['install_requires']


# --- a clean install next to a user's own torch keeps that torch ---------------

def _write_dist_info(directory: str, name: str, version: str) -> str:
    """The metadata files of a distribution with no code and no dependencies."""
    dist_info = osp.join(directory,
                         f'{canonicalize_name(name).replace("-", "_")}-'
                         f'{version}.dist-info')
    os.makedirs(dist_info)
    files = {
        'METADATA': f'Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n',
        'WHEEL': 'Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n'
                 'Tag: py3-none-any\n',
        'INSTALLER': 'pip\n',
    }
    for fname, text in files.items():
        with open(osp.join(dist_info, fname), 'w') as f:
            f.write(text)
    with open(osp.join(dist_info, 'RECORD'), 'w') as f:
        f.write(''.join(f'{osp.basename(dist_info)}/{n},,\n'
                        for n in [*files, 'RECORD']))
    return dist_info


def _fake_wheel(directory: str, name: str, version: str, tmp: str) -> None:
    dist_info = _write_dist_info(tmp, name, version)
    stem = f'{canonicalize_name(name).replace("-", "_")}-{version}'
    with zipfile.ZipFile(osp.join(directory, f'{stem}-py3-none-any.whl'),
                         'w') as whl:
        for fname in os.listdir(dist_info):
            whl.write(osp.join(dist_info, fname),
                      f'{osp.basename(dist_info)}/{fname}')


def _isolated_pip_env() -> dict[str, str]:
    """No pip configuration and no index: only what the test provides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('PIP_')}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK='1',
               PIP_NO_INPUT='1')
    return env


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env=_isolated_pip_env(), **kwargs)
    assert proc.returncode == 0, (f'{" ".join(cmd)} exited {proc.returncode}\n'
                                  f'{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
    return proc


@pytest.fixture(scope='module')
def environment_with_own_torch(tmp_path_factory):
    """A venv that has torch 2.7.1+cu126 and every other requirement at its
    tested pin (metadata only), the package's real wheel (built from
    setup.cfg), and an index offering the tested torch 2.13.0 too."""
    if Version(importlib.metadata.version('pip')) < Version('22.3'):
        pytest.skip('pip >= 22.3 is needed (pip --python, install --report)')
    try:
        import setuptools  # noqa: F401  (builds the wheel, no isolation)
    except ImportError:
        pytest.skip('setuptools is needed to build the package wheel offline')
    root = tmp_path_factory.mktemp('own_torch')
    src, wheels, scratch = (str(root / n) for n in ('src', 'wheels', 'scratch'))
    os.makedirs(osp.join(src, 'mmseg_uncert'))
    for name in ('setup.cfg', 'pyproject.toml', 'README.md',
                 'mmseg_uncert/version.py'):
        shutil.copy(osp.join(ROOT, name), osp.join(src, name))
    open(osp.join(src, 'mmseg_uncert', '__init__.py'), 'w').close()
    _run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-index',
          '--no-build-isolation', '-q', '-w', wheels, src])
    pins = _constraint_pins()
    _fake_wheel(wheels, 'torch', str(pins['torch']), scratch)

    venv = str(root / 'venv')
    _run([sys.executable, '-m', 'venv', '--without-pip', venv])
    python = osp.join(venv, 'bin', 'python')
    site = _run([python, '-c', 'import sysconfig; '
                 'print(sysconfig.get_path("purelib"))']).stdout.strip()
    _write_dist_info(site, 'torch', USER_TORCH)
    groups = _setup_cfg_requirements()
    for req in groups['install_requires'] + groups['tests']:
        name = canonicalize_name(req.name)
        if name != 'torch':
            _write_dist_info(site, name, str(pins[name]))
    return python, wheels


def _dry_run_install(python: str, wheels: str, report: str,
                     *requirements: str) -> list[tuple[str, str]]:
    """What ``pip install`` would install into ``python``'s environment."""
    _run([sys.executable, '-m', 'pip', '--python', python, 'install',
          '--dry-run', '--no-index', '--find-links', wheels, '--report', report,
          *requirements])
    with open(report) as f:
        return [(canonicalize_name(item['metadata']['name']),
                 item['metadata']['version'])
                for item in json.load(f)['install']]


def test_install_keeps_the_users_torch(environment_with_own_torch, tmp_path):
    python, wheels = environment_with_own_torch
    planned = _dry_run_install(python, wheels, str(tmp_path / 'report.json'),
                               'mmseg-uncert[tests]')
    assert planned == [('mmseg-uncert', '0.1.0')]


def test_an_exact_torch_pin_would_replace_it(environment_with_own_torch,
                                             tmp_path):
    """The check above can fail: a torch==2.13.0 requirement, as setup.cfg
    once had, makes pip replace the user's torch with the offered wheel."""
    python, wheels = environment_with_own_torch
    planned = _dry_run_install(python, wheels, str(tmp_path / 'report.json'),
                               'mmseg-uncert', 'torch==2.13.0')
    assert ('torch', '2.13.0') in planned
