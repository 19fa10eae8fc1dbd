"""What the tools' end-to-end tests read: the metrics a run wrote, and mim."""
import glob
import json
import os.path as osp
import sys

import pytest


def _latest_metrics(work_dir: str) -> dict:
    """The metrics json mmengine writes under work_dir/<timestamp>/."""
    files = sorted(f for f in glob.glob(osp.join(work_dir, '*', '*.json'))
                   if osp.basename(f)[:-5] == osp.basename(osp.dirname(f)))
    assert files, f'no metrics json under {work_dir}'
    return json.load(open(files[-1]))


def _mim() -> str:
    mim = osp.join(osp.dirname(sys.executable), 'mim')
    if not osp.exists(mim):
        pytest.skip('openmim is not installed (extra `mim`; `make setup` '
                    'installs it)')
    return mim
