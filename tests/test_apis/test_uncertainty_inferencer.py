"""UncertaintyInferencer and tools/infer.py: maps against mmseg's inference_model.

File names, videos, and bad input named before any model is built; also
mmseg_uncert.apis.infer_files (what tools/infer.py runs) and
mmseg_uncert.apis.inference (init_uncertainty_model).
"""
import glob
import os
import os.path as osp
import re
import runpy
import sys

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmseg.apis import inference_model

import mmseg_uncert.apis.infer_files as infer_files_module
from mmseg_uncert.apis.infer_files import infer_files
from mmseg_uncert.apis.inference import init_uncertainty_model
from mmseg_uncert.apis.inference_inputs import InferenceInputError
from mmseg_uncert.apis.uncertainty_inferencer import UncertaintyInferencer
from mmseg_uncert.datasets import SyntheticStreetsDataset
from mmseg_uncert.models.uncertainty import UNCERTAINTY_NAMES

from conftest import ROOT, run_tool
from helpers.members import member_model_cfg, save_member
from helpers.tiny_config import write_tiny_config


@pytest.fixture(scope='module')
def models(tmp_path_factory, tiny_data_root):
    """A 2-member ensemble config (no checkpoint of its own) and the tiny
    FCN config with a saved random checkpoint, on 64x128 images; test
    pipelines with mmseg's LoadAnnotations only, so that mmseg's own
    inference_model runs them."""
    work = tmp_path_factory.mktemp('infer')
    cfg = write_tiny_config(str(work / 'tiny.py'), tiny_data_root, max_iters=2,
                            uncertainty_gt=False)
    members = [dict(model=member_model_cfg(19),
                    checkpoint=save_member(str(work / f'm{i}.pth'), i, 19))
               for i in range(2)]
    ensemble = work / 'ensemble.py'
    ensemble.write_text(f"_base_ = [{cfg!r}]\nmodel = dict(_delete_=True, "
                        f"type='EnsembleSegmentor', members={members!r})\n")
    torch.manual_seed(0)
    plain = init_uncertainty_model(cfg)
    checkpoint = str(work / 'plain.pth')
    torch.save(dict(state_dict=plain.state_dict(),
                    meta=dict(dataset_meta=dict(SyntheticStreetsDataset.METAINFO))),
               checkpoint)
    images = sorted(glob.glob(osp.join(tiny_data_root, 'leftImg8bit', 'val', '*',
                                       '*.png')))
    return dict(ensemble=str(ensemble), plain=cfg, checkpoint=checkpoint,
                images=images)


@pytest.fixture(scope='module')
def ensemble(models):
    return UncertaintyInferencer(models['ensemble'], None, device='cpu')


@pytest.fixture(scope='module')
def reference(models):
    """The same ensemble, built and run by mmseg's inference_model."""
    return init_uncertainty_model(models['ensemble'])


def _stem(path: str) -> str:
    return osp.splitext(osp.basename(path))[0]


def _files(folder, pattern: str) -> list[str]:
    """Paths under ``folder`` (recursively) that match ``pattern``, sorted."""
    return sorted(glob.glob(f'**/{pattern}', root_dir=folder, recursive=True))


def test_saved_maps_equal_mmseg_inference(models, ensemble, reference, tmp_path):
    images = models['images'][:2]
    results = ensemble(images, out_dir=str(tmp_path), img_out_dir='')
    pred_dir = tmp_path / 'pred'
    expected_files = {f'{_stem(p)}_{suffix}' for p in images for suffix in
                      ['pred.png'] + [f'{n}.npy' for n in UNCERTAINTY_NAMES]}
    assert set(os.listdir(pred_dir)) == expected_files
    assert not (tmp_path / 'vis').exists()  # img_out_dir='': no picture
    for i, path in enumerate(images):
        want = inference_model(reference, path)
        labels = want.pred_sem_seg.data[0].numpy()
        saved = cv2.imread(str(pred_dir / f'{_stem(path)}_pred.png'),
                           cv2.IMREAD_UNCHANGED)
        assert np.array_equal(saved, labels)
        assert np.array_equal(results['predictions'][i], labels)
        assert list(results['uncertainty'][i]) == list(UNCERTAINTY_NAMES)
        for name in UNCERTAINTY_NAMES:
            value = want.pred_uncertainty.get(name)[0].numpy()
            loaded = np.load(pred_dir / f'{_stem(path)}_{name}.npy')
            assert loaded.dtype == np.float32 and loaded.shape == (64, 128)
            assert np.array_equal(loaded, value), name
            assert np.array_equal(results['uncertainty'][i][name], value)


def test_a_folder_is_read_recursively_in_batches(models, ensemble, tmp_path):
    folder = tmp_path / 'in'
    (folder / 'a').mkdir(parents=True)
    os.link(models['images'][0], folder / 'a' / osp.basename(models['images'][0]))
    os.link(models['images'][1], folder / 'top.png')
    (folder / 'notes.txt').write_text('not an image')
    out = tmp_path / 'out'
    results = ensemble(str(folder), batch_size=2, out_dir=str(out), return_vis=True)
    names = [osp.join('a', _stem(models['images'][0])), 'top']
    assert _files(out / 'pred', '*_pred.png') == \
        sorted(f'{n}_pred.png' for n in names)
    assert _files(out / 'vis', '*.png') == \
        sorted(f'{n}.png' for n in names)
    # the returned picture is the one written, and has its 2 + 5 panels in
    # the configs' 4 columns (4 inches of 80 dots each): 2 rows
    vis = cv2.imread(str(out / 'vis' / 'top.png'))[..., ::-1]
    assert np.array_equal(results['visualization'][1], vis)
    assert vis.shape[1] == 4 * 4 * 80
    top = cv2.imread(models['images'][1])
    assert vis.shape[0] == round(2 * (4 * top.shape[0] / top.shape[1] + 0.5) * 80)


def test_video_frames_are_named_by_index(models, ensemble, reference, tmp_path):
    video = str(tmp_path / 'drive.avi')
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*'MJPG'), 5, (128, 64))
    for path in models['images'][:3]:
        writer.write(cv2.imread(path))
    writer.release()
    out = tmp_path / 'out'
    results = ensemble(video, out_dir=str(out), img_out_dir='')
    assert len(results['predictions']) == 3
    assert sorted(p for p in os.listdir(out / 'pred') if p.endswith('_pred.png')) == [
        f'drive_{i:06d}_pred.png' for i in range(3)]
    capture = cv2.VideoCapture(video)  # the decoded frames, read independently
    for i in range(3):
        ok, frame = capture.read()
        assert ok
        want = inference_model(reference, frame).pred_uncertainty.get('epistemic')[0]
        assert np.array_equal(np.load(out / 'pred' / f'drive_{i:06d}_epistemic.npy'),
                              want.numpy())


def test_an_unreadable_image_is_named(models, ensemble, tmp_path):
    garbage = tmp_path / 'broken.png'
    garbage.write_bytes(b'not a png at all')
    empty = tmp_path / 'empty.jpg'
    empty.write_bytes(b'')
    for bad in (garbage, empty):
        with pytest.raises(InferenceInputError,
                           match=re.escape(f'cannot decode {bad}')):
            ensemble([models['images'][0], str(bad)])
    with pytest.raises(InferenceInputError, match='input nope.png does not exist'):
        ensemble('nope.png')


def test_arrays_take_given_names_or_numbers(models, ensemble, tmp_path):
    frame = cv2.imread(models['images'][0])
    ensemble([frame, frame], out_dir=str(tmp_path / 'named'), img_out_dir='',
             names=['x', 'y'])
    assert {'x_pred.png', 'y_pred.png'} <= set(os.listdir(tmp_path / 'named' / 'pred'))
    start = ensemble.num_pred_imgs
    ensemble(frame, out_dir=str(tmp_path / 'numbered'), img_out_dir='')
    assert f'{start:08d}_pred.png' in os.listdir(tmp_path / 'numbered' / 'pred')
    with pytest.raises(InferenceInputError, match='1 names for 2 inputs'):
        ensemble([frame, frame], names=['x'])


class _NoModel:
    """Stands in for UncertaintyInferencer: a test fails if it is built."""
    def __init__(self, *args, **kwargs):
        raise AssertionError('the model was built before the input was checked')


def test_bad_input_fails_before_the_model_is_built(models, tmp_path, monkeypatch):
    monkeypatch.setattr(infer_files_module, 'UncertaintyInferencer', _NoModel)
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    out = str(blocker / 'out')  # under a regular file: cannot be created
    with pytest.raises(InferenceInputError,
                       match=re.escape(f'cannot write to the output folder {out}')):
        infer_files(models['plain'], models['checkpoint'], models['images'][0], out)
    with pytest.raises(FileNotFoundError, match='config no/such.py does not exist'):
        infer_files('no/such.py', None, models['images'][0], str(tmp_path / 'o'))
    with pytest.raises(FileNotFoundError, match='checkpoint no/such.pth does not'):
        infer_files(models['plain'], 'no/such.pth', models['images'][0],
                    str(tmp_path / 'o'))
    with pytest.raises(InferenceInputError, match='a checkpoint for EncoderDecoder'):
        infer_files(models['plain'], None, models['images'][0], str(tmp_path / 'o'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(InferenceInputError, match='no image under'):
        infer_files(models['plain'], models['checkpoint'], str(tmp_path / 'empty'),
                    str(tmp_path / 'o'))
    not_video = tmp_path / 'clip.avi'
    not_video.write_bytes(b'garbage')
    with pytest.raises(InferenceInputError,
                       match=re.escape(f'cannot open the video {not_video}')):
        infer_files(models['plain'], models['checkpoint'], str(not_video),
                    str(tmp_path / 'o'))


def test_the_pipeline_needs_no_annotation_files(models):
    cfg = Config.fromfile(models['plain'])
    cfg.test_dataloader.dataset.pipeline = [
        dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
        dict(type='LoadUncertaintyAnnotations'), dict(type='PackSegUncertaintyInputs')]
    inferencer = UncertaintyInferencer(cfg, models['checkpoint'], device='cpu')
    assert [type(t).__name__ for t in inferencer.pipeline.transforms] == [
        'LoadImageFromNDArray', 'PackSegUncertaintyInputs']
    result = inferencer(models['images'][0])
    assert result['predictions'].shape == (64, 128) and result['uncertainty'] == {}


@pytest.mark.slow
def test_infer_tool_end_to_end(models, tmp_path):
    folder = tmp_path / 'in' / 'city'
    folder.mkdir(parents=True)
    for path in models['images'][:3]:
        os.link(path, folder / osp.basename(path))
    out = tmp_path / 'out'
    proc = run_tool(['tools/infer.py', models['plain'], models['checkpoint'],
                     str(tmp_path / 'in'), '--out-dir', str(out), '--vis',
                     '--batch-size', '2', '--device', 'cpu'])
    assert '3 images written' in proc.stdout
    # none of the noise a user used to see on every run
    for noise in ('Failed to search registry', 'pkg_resources', 'Failed to add'):
        assert noise not in proc.stdout + proc.stderr, noise
    stems = [osp.join('city', _stem(p)) for p in models['images'][:3]]
    assert _files(out / 'pred', '*_pred.png') == \
        [f'{s}_pred.png' for s in stems]
    assert _files(out / 'vis', '*.png') == \
        [f'{s}.png' for s in stems]
    # the plain model's predictions, as mmseg's inference_model gives them
    model = init_uncertainty_model(models['plain'], models['checkpoint'])
    want = inference_model(model, models['images'][0]).pred_sem_seg.data[0].numpy()
    saved = cv2.imread(str(out / 'pred' / f'{stems[0]}_pred.png'), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(saved, want)


def test_infer_tool_names_the_bad_out_dir(models, tmp_path, monkeypatch):
    """tools/infer.py run as a script (in this process): a clean exit naming
    the folder, before any model is built."""
    monkeypatch.setattr(infer_files_module, 'UncertaintyInferencer', _NoModel)
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    monkeypatch.setattr(sys, 'argv', [
        'tools/infer.py', models['plain'], models['checkpoint'], models['images'][0],
        '--out-dir', str(blocker / 'o')])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(osp.join(ROOT, 'tools', 'infer.py'), run_name='__main__')
    assert str(info.value) == (f'tools/infer.py: cannot write to the output folder '
                               f'{blocker / "o"} (Not a directory); give a folder '
                               f'you can write to')


def test_a_distillation_config_runs_its_student_alone(models, tmp_path):
    """A training wrapper is deployed (init_uncertainty_model): its teacher,
    which names a config that does not exist, is never built, and a
    checkpoint with teacher keys loads into the student."""
    cfg = Config.fromfile(models['plain'])
    student = {k: v for k, v in cfg.model.to_dict().items() if k != 'type'}
    cfg.model = dict(type='EnsembleDistiller', **student,
                     teacher=dict(type='EnsembleSegmentor', members=['never/built.py']))
    state = torch.load(models['checkpoint'])
    state['state_dict']['teacher.members.0.weight'] = torch.zeros(1)
    checkpoint = str(tmp_path / 'distilled.pth')
    torch.save(state, checkpoint)
    inferencer = UncertaintyInferencer(cfg, checkpoint, device='cpu')
    assert type(inferencer.model).__name__ == 'EncoderDecoder'
    plain = init_uncertainty_model(models['plain'], models['checkpoint'])
    want = inference_model(plain, models['images'][0]).pred_sem_seg.data[0].numpy()
    assert np.array_equal(inferencer(models['images'][0])['predictions'], want)


def test_the_collate_function_comes_from_mmengines_registry(models):
    """Looked up where collate functions are registered (mmseg has no function
    registry, and mmengine's own lookup in its scope warned on every run); an
    unknown one is named."""
    from mmengine.dataset import default_collate, pseudo_collate
    cfg = Config.fromfile(models['plain'])
    assert UncertaintyInferencer(cfg, models['checkpoint'], device='cpu').collate_fn \
        is pseudo_collate
    cfg.test_dataloader.collate_fn = dict(type='default_collate')
    assert UncertaintyInferencer(cfg, models['checkpoint'], device='cpu').collate_fn \
        is default_collate
    cfg.test_dataloader.collate_fn = dict(type='no_such_collate')
    with pytest.raises(KeyError, match="collate_fn: 'no_such_collate' is not a registered"):
        UncertaintyInferencer(cfg, models['checkpoint'], device='cpu')
