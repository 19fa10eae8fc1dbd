"""Shared fixtures: a tiny generated data set and helpers to run the tools."""
from __future__ import annotations

import os
import os.path as osp
import subprocess
import sys

import pytest

from mmseg_uncert.datasets.synthetic_streets import SceneSpec, generate

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
HELPERS = osp.join(ROOT, 'tests', 'helpers')
TINY_COUNTS = {'train': 12, 'val': 4, 'ood': 4, 'shift_train': 2,
               'shift_val': 2}


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs two processes) each worker gets
    its share of the cores: torch would start one thread per core in each,
    and the workers would fight over them."""
    workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
    if workers > 1:
        import torch
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(scope='session')
def tiny_data_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Every split, 64x128: 12 train, 4 val, 4 ood, 2 shift_train, 2 shift_val."""
    root = str(tmp_path_factory.mktemp('synthetic_streets'))
    generate(root, TINY_COUNTS, seed=7, spec=SceneSpec(64, 128), workers=1)
    return root


def tool_env() -> dict[str, str]:
    """Environment for the tools: the test helpers importable, one thread."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [ROOT, HELPERS, env.get('PYTHONPATH', '')]).rstrip(os.pathsep)
    env['OMP_NUM_THREADS'] = '1'
    return env


def run_tool(args: list[str], cwd: str = ROOT, timeout: int = 600,
             python: bool = True, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command like a user would; fail the test with its output.

    With ``check=False`` the process is returned whatever its exit code.
    """
    cmd = [sys.executable, *args] if python else args
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f'{" ".join(cmd)} exited {proc.returncode}\n'
                    f'--- stdout ---\n{proc.stdout[-6000:]}\n'
                    f'--- stderr ---\n{proc.stderr[-6000:]}')
    return proc
