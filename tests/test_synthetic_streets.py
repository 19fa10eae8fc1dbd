"""The generated benchmark: deterministic, Cityscapes layout, valid ids."""
import glob
import hashlib
import os.path as osp

import cv2
import numpy as np
import pytest

from mmseg_uncert.datasets import synthetic_streets as ss

from conftest import run_tool


def _digests(root: str) -> dict:
    files = sorted(glob.glob(osp.join(root, '**', '*.png'), recursive=True))
    return {osp.relpath(f, root): hashlib.sha256(open(f, 'rb').read()).hexdigest()
            for f in files}


def test_same_seed_gives_byte_identical_files_whatever_the_workers(tmp_path):
    size = ss.SceneSize(48, 96)
    counts = {'train': 5, 'val': 2}
    ss.generate(str(tmp_path / 'a'), counts, seed=3, size=size, workers=1)
    ss.generate(str(tmp_path / 'b'), counts, seed=3, size=size, workers=2)
    ss.generate(str(tmp_path / 'c'), counts, seed=4, size=size, workers=1)
    a, b, c = (_digests(str(tmp_path / k)) for k in 'abc')
    assert len(a) == 14 and a == b
    assert a.keys() == c.keys() and a != c


def test_cityscapes_layout_and_train_ids(tiny_data_root):
    imgs = sorted(glob.glob(osp.join(tiny_data_root, 'leftImg8bit', 'train', '*',
                                     '*_leftImg8bit.png')))
    assert len(imgs) == 12
    seen = set()
    for img_path in imgs:
        gt_path = img_path.replace('leftImg8bit', 'gtFine', 1).replace(
            '_leftImg8bit.png', '_gtFine_labelTrainIds.png')
        img = cv2.imread(img_path)
        gt = cv2.imread(gt_path, cv2.IMREAD_UNCHANGED)
        assert img.shape == (64, 128, 3) and gt.shape == (64, 128)
        seen |= set(np.unique(gt).tolist())
    assert seen <= set(range(19)) | {255}
    assert {ss.ROAD, ss.SIDEWALK, ss.BUILDING, ss.SKY, ss.CAR} <= seen


def test_cli_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / 'keep.txt').write_text('x')
    proc = run_tool(['tools/make_synthetic.py', '--out-dir', str(tmp_path),
                     '--train', '1', '--val', '0'], check=False)
    assert proc.returncode != 0
    assert '--overwrite' in proc.stderr
    assert not (tmp_path / 'leftImg8bit').exists()


@pytest.mark.parametrize('args,message', [
    (['--train', '-1'], '--train must be >= 0'),
    (['--height', '8'], 'at least 32 pixels'),
])
def test_cli_rejects_invalid_counts_and_sizes(tmp_path, args, message):
    proc = run_tool(['tools/make_synthetic.py', '--out-dir',
                     str(tmp_path / 'out'), *args], check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
