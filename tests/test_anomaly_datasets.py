"""The anomaly benchmarks' data sets on tiny files in their published layouts,
loaded through the shipped test configs."""
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmseg_uncert  # noqa: F401
from mmseg.registry import DATASETS
from mmseg_uncert.evaluation import AnomalyMetric

from conftest import ROOT

BASE = osp.join(ROOT, 'configs', '_base_', 'datasets')
H, W = 12, 16


def _write(path: str, array: np.ndarray) -> str:
    os.makedirs(osp.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, array)
    return path


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (H, W, 3), np.uint8)


def _mask(seed: int, values: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).choice(np.array(values, np.uint8), (H, W))


def _dataset(config: str, data_root: str):
    init_default_scope('mmseg')
    cfg = Config.fromfile(osp.join(BASE, config))
    dataset_cfg = cfg.test_dataloader.dataset
    dataset_cfg.data_root = data_root
    return DATASETS.build(dataset_cfg), cfg


def _smiyc_root(root: str, suffix: str, frames: list[str]) -> dict[str, np.ndarray]:
    """dataset_*Track/images/<frame><suffix> + labels_masks/<frame>_labels_semantic.png;
    masks use 0, 1 and 255, plus a stray 7 that the benchmark counts as void."""
    masks = {}
    for i, frame in enumerate(frames):
        _write(osp.join(root, 'images', frame + suffix), _image(i))
        masks[frame] = _mask(i, (0, 1, 255, 7))
        _write(osp.join(root, 'labels_masks', frame + '_labels_semantic.png'),
               masks[frame])
    # a test frame: the benchmark keeps its mask private
    _write(osp.join(root, 'images', 'zebra0000' + suffix), _image(99))
    return masks


def _smiyc_ood(mask: np.ndarray) -> np.ndarray:
    return np.where(mask == 7, 255, mask)  # 0 and 1 kept, the rest void


def test_road_anomaly21_loads_the_validation_masks_as_gt_ood(tmp_path):
    root = str(tmp_path / 'dataset_AnomalyTrack')
    masks = _smiyc_root(root, '.jpg', ['validation0000', 'validation0001'])
    dataset, cfg = _dataset('road_anomaly21.py', root)
    assert len(dataset) == 2  # zebra0000 has no public mask
    for index, frame in enumerate(sorted(masks)):
        packed = dataset[index]
        sample = packed['data_samples']
        assert osp.basename(sample.img_path) == frame + '.jpg'
        # the image is resized for the model, the mask is kept at its size
        assert packed['inputs'].shape[1:] == (1024, 1365)
        np.testing.assert_array_equal(sample.gt_ood.data[0].numpy(),
                                      _smiyc_ood(masks[frame]))
        assert 'gt_sem_seg' not in sample
    assert cfg.test_evaluator.min_pred_component_size == 500
    assert cfg.test_evaluator.min_gt_component_size == 100


def test_road_obstacle21_webp_frames_and_the_benchmarks_exclusions(tmp_path):
    root = str(tmp_path / 'dataset_ObstacleTrack')
    frames = ['validation_1', 'validation_19', 'validation_2', 'validation_30']
    masks = _smiyc_root(root, '.webp', frames)
    dataset, cfg = _dataset('road_obstacle21.py', root)
    names = [osp.basename(dataset.get_data_info(i)['img_path'])
             for i in range(len(dataset))]
    assert names == ['validation_1.webp', 'validation_2.webp',
                     'validation_30.webp']
    sample = dataset[1]['data_samples']
    np.testing.assert_array_equal(sample.gt_ood.data[0].numpy(),
                                  _smiyc_ood(masks['validation_2']))
    assert cfg.test_evaluator.min_pred_component_size == 50


FISHY_FRAMES = {
    # fishyscapes id, Lost and Found frame, Lost and Found split
    '0000': ('04_Maurener_Weg_8_000000_000030', 'train'),
    '0001': ('13_Elly_Beinhorn_Str_000000_000050', 'test'),
}


def _fishy_root(root: str) -> dict[str, np.ndarray]:
    masks = {}
    for i, (fs_id, (frame, split)) in enumerate(FISHY_FRAMES.items()):
        scene = frame[:-len('_000000_000030')]
        _write(osp.join(root, 'leftImg8bit', split, scene,
                        frame + '_leftImg8bit.png'), _image(i))
        masks[frame] = _mask(i, (0, 1, 255))
        _write(osp.join(root, 'fishyscapes_lostandfound',
                        f'{fs_id}_{frame}_labels.png'), masks[frame])
    return masks


def test_fishyscapes_lost_and_found_pairs_masks_with_lost_and_found_images(
        tmp_path):
    root = str(tmp_path / 'fishyscapes_lost_and_found')
    masks = _fishy_root(root)
    dataset, cfg = _dataset('fishyscapes_lost_and_found.py', root)
    assert len(dataset) == 2
    for index, (frame, split) in enumerate(FISHY_FRAMES.values()):
        sample = dataset[index]['data_samples']
        assert sample.img_path.endswith(
            osp.join(split, frame[:-len('_000000_000030')],
                     frame + '_leftImg8bit.png'))
        np.testing.assert_array_equal(sample.gt_ood.data[0].numpy(),
                                      masks[frame])
    assert cfg.test_evaluator.protocol == 'fishyscapes'


def _street_hazards_root(root: str) -> dict[str, np.ndarray]:
    labels = {}
    for i, name in enumerate(['300', '301']):
        _write(osp.join(root, 'test', 'images', 'test', 't5', name + '.png'),
               _image(i))
        labels[name] = _mask(i, tuple(range(15)))  # 0, 1..13, 14 = anomaly
        _write(osp.join(root, 'test', 'annotations', 'test', 't5',
                        name + '.png'), labels[name])
    return labels


def test_street_hazards_maps_the_1_based_labels_and_the_anomaly(tmp_path):
    root = str(tmp_path / 'streethazards')
    labels = _street_hazards_root(root)
    dataset, cfg = _dataset('street_hazards.py', root)
    assert len(dataset) == 2
    assert len(dataset.metainfo['classes']) == 13
    for index, name in enumerate(sorted(labels)):
        sample = dataset[index]['data_samples']
        raw = labels[name].astype(np.int64)
        # 1..13 -> the 13 known classes 0..12; 0 and the anomaly (14) ignored
        expected = np.where((raw == 0) | (raw == 14), 255, raw - 1)
        np.testing.assert_array_equal(sample.gt_sem_seg.data[0].numpy(),
                                      expected)
        np.testing.assert_array_equal(sample.gt_ood.data[0].numpy(),
                                      (raw == 14).astype(np.uint8))
    assert [m.type for m in cfg.test_evaluator] == ['IoUMetric', 'AnomalyMetric']


def test_street_hazards_samples_run_through_the_metric(tmp_path):
    root = str(tmp_path / 'streethazards')
    labels = _street_hazards_root(root)
    dataset, _ = _dataset('street_hazards.py', root)
    metric = AnomalyMetric(protocol='streethazards', scores=['max_prob'])
    for index, name in enumerate(sorted(labels)):
        sample = dataset[index]['data_samples'].to_dict()
        # a model sure of class 0 everywhere but on the anomaly: perfect
        logits = torch.zeros(13, H, W)
        logits[0] = torch.where(torch.from_numpy(labels[name] == 14), 0.0, 9.0)
        sample['seg_logits'] = dict(data=logits)
        metric.process({}, [sample])
    out = metric.evaluate(len(dataset))
    assert out['streethazards/num_images'] == 2
    assert out['streethazards/AUROC/max_prob'] == 1.0
    assert out['streethazards/AUPR/max_prob'] == 1.0
    assert out['streethazards/FPR95/max_prob'] == 0.0


def test_a_missing_benchmark_file_is_named(tmp_path):
    init_default_scope('mmseg')
    # SMIYC: a validation frame without its mask
    root = str(tmp_path / 'dataset_AnomalyTrack')
    _smiyc_root(root, '.jpg', ['validation0000', 'validation0001'])
    missing = osp.join(root, 'labels_masks', 'validation0001_labels_semantic.png')
    os.remove(missing)
    with pytest.raises(FileNotFoundError) as info:
        _dataset('road_anomaly21.py', root)
    assert str(info.value).startswith(f'{missing} is missing')
    assert 'images/<frame><img_suffix>' in str(info.value)
    # SMIYC: a data root without the benchmark's folders
    empty = str(tmp_path / 'empty')
    os.makedirs(empty)
    with pytest.raises(FileNotFoundError,
                       match=f'{osp.join(empty, "images")} is missing'):
        _dataset('road_anomaly21.py', empty)
    # Fishyscapes: a mask whose Lost and Found image is absent
    root = str(tmp_path / 'fishyscapes_lost_and_found')
    _fishy_root(root)
    frame, split = FISHY_FRAMES['0001']
    image = osp.join(root, 'leftImg8bit', split, frame[:-len('_000000_000030')],
                     frame + '_leftImg8bit.png')
    os.remove(image)
    with pytest.raises(FileNotFoundError) as info:
        _dataset('fishyscapes_lost_and_found.py', root)
    assert image in str(info.value)
    assert f'0001_{frame}_labels.png has no image' in str(info.value)
    # StreetHazards: an image without its annotation, then no test folder
    root = str(tmp_path / 'streethazards')
    _street_hazards_root(root)
    missing = osp.join(root, 'test', 'annotations', 'test', 't5', '301.png')
    os.remove(missing)
    with pytest.raises(FileNotFoundError) as info:
        _dataset('street_hazards.py', root)
    assert str(info.value).startswith(f'{missing} is missing')
    with pytest.raises(FileNotFoundError,
                       match=osp.join(empty, 'test', 'images', 'test')):
        _dataset('street_hazards.py', empty)
    with pytest.raises(ValueError, match='reduce_zero_label must be True'):
        DATASETS.build(dict(type='StreetHazardsDataset', data_root=root,
                            reduce_zero_label=False))


def test_a_palette_png_mask_is_read_as_its_indices(tmp_path):
    """Masks saved in P mode (as some benchmark releases and tools write them)
    decode to their palette indices, as PIL and the benchmarks read them;
    cv2 alone would give their colours."""
    from PIL import Image
    root = str(tmp_path / 'dataset_AnomalyTrack')
    masks = _smiyc_root(root, '.jpg', ['validation0000'])
    path = osp.join(root, 'labels_masks', 'validation0000_labels_semantic.png')
    palette = Image.new('P', (W, H))
    palette.putdata(masks['validation0000'].ravel().tolist())
    palette.putpalette([value for i in range(256) for value in (i, 255 - i, 128)])
    palette.save(path)
    assert Image.open(path).mode == 'P' and cv2.imread(path, cv2.IMREAD_UNCHANGED).ndim == 3
    dataset, _ = _dataset('road_anomaly21.py', root)
    np.testing.assert_array_equal(dataset[0]['data_samples'].gt_ood.data[0].numpy(),
                                  _smiyc_ood(masks['validation0000']))
