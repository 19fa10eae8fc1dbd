"""The check the anomaly-benchmark data sets share: their folders exist."""
from __future__ import annotations

import os.path as osp
from typing import Sequence


def require_folders(owner: str, folders: Sequence[str], layout: str) -> None:
    """Raise ``FileNotFoundError`` naming the first missing folder of
    ``folders`` and the layout ``owner`` (a data-set class) expects."""
    for folder in folders:
        if not osp.isdir(folder):
            raise FileNotFoundError(f'{folder} is missing: {owner} expects {layout}')
