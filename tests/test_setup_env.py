"""tools/setup_env.sh stops on a wrong Python with the reason and the fix."""
import os
import stat
import subprocess

from conftest import ROOT


def _fake_python(tmp_path, version: str) -> str:
    exe = tmp_path / 'python3'
    exe.write_text(f'#!/bin/sh\necho {version}\n')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(exe)


def _run_setup(tmp_path, python: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, VENV=str(tmp_path / 'venv'), PYTHON=python)
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
