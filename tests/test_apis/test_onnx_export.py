"""A deployed student as one ONNX graph: onnxruntime against PyTorch.

The student is built from the shipped distillation config with seeded random
weights (random BatchNorm statistics too), saved as a checkpoint and exported
through ``export_onnx_from_config`` as a user would; the references are
computed from the saved model with the normalisation written out by hand.
"""
import copy
import importlib.util
import json
import os
import os.path as osp
import re

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

ort = pytest.importorskip('onnxruntime', reason='ONNX export is checked with '
                          'onnxruntime, a test-only dependency (the tests extra)')
onnx = pytest.importorskip('onnx', reason='ONNX export needs onnx (the tests extra)')
pytest.importorskip('onnxscript', reason='torch.onnx.export(dynamo=True) needs '
                    'onnxscript (the tests extra)')

from mmseg.registry import MODELS  # noqa: E402

from conftest import ROOT  # noqa: E402
from mmseg_uncert.apis import init_uncertainty_model  # noqa: E402
from mmseg_uncert.apis.onnx_export import (DeployedSegmentor,  # noqa: E402
                                           UnsupportedModelError, _ExportableOps,
                                           adaptive_avg_pool2d, digamma, export_onnx,
                                           export_onnx_from_config, verify_onnx)
from mmseg_uncert.models.segmentors import mmseg_scope  # noqa: E402

STUDENT = osp.join(ROOT, 'configs', 'distill',
                   'distill-ensemble-3x_fast-scnn_1xb4-0.5k_synthetic-128x256.py')
PLAIN = osp.join(ROOT, 'configs', 'fcn',
                 'fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py')
ENSEMBLE = osp.join(ROOT, 'configs', 'ensemble',
                    'ensemble-3x_fast-scnn_synthetic-128x256.py')
MC_DROPOUT = osp.join(ROOT, 'configs', 'mc_dropout',
                      'mc-dropout-20x_fcn_mobilenet-v3-s_synthetic-128x256.py')
HETEROSCEDASTIC = osp.join(ROOT, 'configs', 'heteroscedastic',
                           'heteroscedastic-fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py')
# the configs' SegDataPreProcessor: RGB order (bgr_to_rgb=True), these values
MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32).reshape(1, 3, 1, 1)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32).reshape(1, 3, 1, 1)
NUM_CLASSES = 19
MAP_NAMES = ['epistemic', 'aleatoric']
ATOL = 1e-4


def _random_batchnorm(model: nn.Module, seed: int) -> nn.Module:
    """Seeded non-trivial running statistics, so the graph's BatchNorm is
    checked with more than mean 0, variance 1."""
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            module.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model


def _encode_decode(model: nn.Module, x: np.ndarray) -> torch.Tensor:
    size = tuple(x.shape[2:])
    with torch.no_grad():
        return model.encode_decode(torch.from_numpy(np.ascontiguousarray(x)),
                                   [dict(img_shape=size, pad_shape=size,
                                         ori_shape=size)] * x.shape[0])


def _bgr_image(batch: int, h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (batch, 3, h, w)).astype(np.float32)


@pytest.fixture(scope='module')
def student(tmp_path_factory):
    """The student saved as a checkpoint, exported from config + checkpoint."""
    work = tmp_path_factory.mktemp('onnx_student')
    torch.manual_seed(0)
    reference = _random_batchnorm(init_uncertainty_model(STUDENT), seed=1)
    checkpoint = str(work / 'student.pth')
    torch.save(dict(state_dict=reference.state_dict(),
                    meta=dict(dataset_meta=reference.dataset_meta)), checkpoint)
    model, written = export_onnx_from_config(STUDENT, checkpoint, str(work / 'student.onnx'),
                                             shape=(64, 128))
    session = ort.InferenceSession(written.path, providers=['CPUExecutionProvider'])
    return dict(reference=reference, model=model, written=written, session=session,
                work=work)


@pytest.mark.parametrize('batch,h,w', [(2, 64, 128), (1, 40, 72), (3, 97, 131)],
                         ids=['traced-size', 'batch1-smaller', 'batch3-odd-size'])
def test_student_graph_matches_pytorch(student, batch, h, w):
    session = student['session']
    assert [o.name for o in session.get_outputs()] == ['seg_logits', *MAP_NAMES]
    image = _bgr_image(batch, h, w, seed=batch * 1000 + h)
    got = dict(zip([o.name for o in session.get_outputs()],
                   session.run(None, {'image': image})))
    # by hand: BGR -> RGB, then (x - mean) / std, then the PyTorch network
    # whose weights were saved, its C + K channels split
    out = _encode_decode(student['reference'], (image[:, ::-1] - MEAN) / STD).numpy()
    assert out.shape == (batch, NUM_CLASSES + len(MAP_NAMES), h, w)
    expected = {'seg_logits': out[:, :NUM_CLASSES],
                **{n: out[:, NUM_CLASSES + k] for k, n in enumerate(MAP_NAMES)}}
    for name, value in expected.items():
        assert got[name].shape == value.shape, name
        # not a vacuous comparison: the maps vary over the image
        assert value.std() > 1e-4, name
        np.testing.assert_allclose(got[name], value, atol=ATOL, rtol=0, err_msg=name)


def test_student_graph_is_one_self_contained_file_with_metadata(student):
    written = student['written']
    # no external weights file beside it
    assert sorted(os.listdir(student['work'])) == ['student.onnx', 'student.pth']
    graph = onnx.load(written.path)
    props = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(props['uncertainty_names']) == MAP_NAMES
    assert props['num_classes'] == str(NUM_CLASSES)
    assert json.loads(props['classes']) == list(student['reference'].dataset_meta['classes'])
    assert len(json.loads(props['classes'])) == NUM_CLASSES
    assert props['normalization'] == 'in_graph'
    assert props['input_channel_order'] == 'bgr'
    np.testing.assert_allclose(json.loads(props['mean']), MEAN.ravel(), atol=1e-4)
    np.testing.assert_allclose(json.loads(props['std']), STD.ravel(), atol=1e-4)
    (image, ) = graph.graph.input
    dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    assert image.name == 'image' and dims == ['batch', 3, 'height', 'width']
    assert written.output_shapes == {'seg_logits': ['batch', NUM_CLASSES, 'height', 'width'],
                                     'epistemic': ['batch', 'height', 'width'],
                                     'aleatoric': ['batch', 'height', 'width']}


def test_verify_onnx_reports_agreement_and_catches_a_different_model(student):
    diffs = verify_onnx(student['model'], student['written'].path, batch=1, shape=(48, 80))
    assert set(diffs) == {'seg_logits', *MAP_NAMES}
    assert max(diffs.values()) < ATOL
    changed = copy.deepcopy(student['model'])
    with torch.no_grad():
        changed.decode_head.head.conv_seg.bias.add_(1.0)
    diffs = verify_onnx(changed, student['written'].path, batch=1, shape=(48, 80))
    # every logit is shifted by exactly 1
    assert diffs['seg_logits'] == pytest.approx(1.0, abs=1e-4)


def test_the_tool_exports_the_regressed_aleatoric_map_with_cfg_options(student):
    """tools/export_onnx.py --cfg-options: the same checkpoint with every map
    regressed (derived_names=()), so the graph's aleatoric map is the
    branch's second regressed map, decoded and resized, not the entropy."""
    spec = importlib.util.spec_from_file_location(
        'export_onnx_tool', osp.join(ROOT, 'tools', 'export_onnx.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = str(student['work'] / 'regressed' / 'student.onnx')
    assert tool.main([STUDENT, str(student['work'] / 'student.pth'), '--out', out,
                      '--shape', '64', '128', '--cfg-options',
                      'model.decode_head.derived_names=()',
                      'model.decode_head.regress_derived=False']) == 0
    session = ort.InferenceSession(out, providers=['CPUExecutionProvider'])
    image = _bgr_image(1, 64, 128, seed=11)
    got = dict(zip([o.name for o in session.get_outputs()],
                   session.run(None, {'image': image})))
    # by hand: the reference's branch outputs, both maps decoded, resized
    model = student['reference']
    x = torch.from_numpy(np.ascontiguousarray((image[:, ::-1] - MEAN) / STD))
    with torch.no_grad():
        _, raw, _ = model.decode_head.forward_with_uncertainty(model.extract_feat(x))
        maps = F.interpolate(model.decode_head.loss_uncertainty.decode(raw),
                             size=(64, 128), mode='bilinear', align_corners=False)
        derived = _encode_decode(model, (image[:, ::-1] - MEAN) / STD)
    np.testing.assert_allclose(got['epistemic'], maps[:, 0].numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(got['aleatoric'], maps[:, 1].numpy(), atol=ATOL, rtol=0)
    assert np.abs(got['aleatoric'] - derived[:, NUM_CLASSES + 1].numpy()).max() > 0.01


def test_rgb_input_order_swaps_in_the_graph(student):
    """input_channel_order='rgb' (the PyTorch module the graph is traced
    from): an RGB image gives what its BGR version gives in 'bgr' order."""
    model = student['reference']
    image = _bgr_image(1, 32, 48, seed=5)
    rgb = np.ascontiguousarray(image[:, ::-1])
    with torch.no_grad():
        from_rgb = DeployedSegmentor(model, input_channel_order='rgb')(torch.from_numpy(rgb))
    expected = _encode_decode(model, (rgb - MEAN) / STD)
    torch.testing.assert_close(from_rgb[0], expected[:, :NUM_CLASSES], atol=1e-5, rtol=0)
    torch.testing.assert_close(from_rgb[2], expected[:, NUM_CLASSES + 1], atol=1e-5, rtol=0)


def test_plain_mmseg_model_static_size_normalized_input(tmp_path):
    """A plain EncoderDecoder: logits only; normalisation left out of the
    graph; H, W fixed, the batch dynamic."""
    torch.manual_seed(2)
    model = _random_batchnorm(init_uncertainty_model(PLAIN), seed=3)
    assert type(model).__name__ == 'EncoderDecoder'
    written = export_onnx(model, str(tmp_path / 'plain.onnx'), shape=(64, 96),
                          normalize_in_graph=False, dynamic_size=False)
    assert written.input_name == 'inputs' and written.output_names == ['seg_logits']
    assert written.output_shapes == {'seg_logits': ['batch', NUM_CLASSES, 64, 96]}
    props = {p.key: p.value for p in onnx.load(written.path).metadata_props}
    assert props['normalization'] == 'none' and json.loads(props['uncertainty_names']) == []
    session = ort.InferenceSession(written.path, providers=['CPUExecutionProvider'])
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 64, 96)).astype(np.float32)
        (got, ) = session.run(None, {'inputs': x})
        np.testing.assert_allclose(got, _encode_decode(model, x).numpy(), atol=ATOL, rtol=0)
    with pytest.raises(Exception, match='(?i)dimension'):
        session.run(None, {'inputs': np.zeros((1, 3, 64, 128), np.float32)})


@pytest.mark.parametrize('size,out', [((2, 4), (6, 6)), ((5, 7), (3, 2)), ((8, 16), (6, 6)),
                                      ((1, 1), (2, 3)), ((33, 47), (6, 1)), ((7, 7), (7, 7)),
                                      ((9, 10), (1, 1))])
def test_size_independent_adaptive_avg_pool2d_matches_torch(size, out):
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(adaptive_avg_pool2d(x, out), F.adaptive_avg_pool2d(x, out),
                               atol=1e-6, rtol=0)


def test_adaptive_avg_pool2d_by_hand():
    # 3 inputs into 2 bins: [0, 2) and [1, 3) overlap at index 1
    x = torch.tensor([1.0, 2.0, 4.0]).view(1, 1, 1, 3)
    assert adaptive_avg_pool2d(x, (1, 2)).flatten().tolist() == [1.5, 3.0]


def test_digamma_series_matches_torch_and_known_values():
    x = torch.logspace(-6, 8, 500, dtype=torch.float64)
    torch.testing.assert_close(digamma(x), torch.digamma(x), atol=1e-9, rtol=1e-9)
    euler_gamma = 0.5772156649015329
    # ψ(1) = −γ, ψ(1/2) = −γ − 2 ln 2, ψ(n + 1) = ψ(n) + 1/n
    values = digamma(torch.tensor([1.0, 0.5, 4.0], dtype=torch.float64)).tolist()
    assert values == pytest.approx([-euler_gamma, -euler_gamma - 2 * np.log(2),
                                    -euler_gamma + 1 + 1 / 2 + 1 / 3], abs=1e-10)
    # outside x > 0 the series does not hold: NaN, not a wrong number
    assert torch.isnan(digamma(torch.tensor([0.0, -1.5]))).all()


def test_export_mode_swaps_pooling_and_digamma_only():
    x = torch.randn(1, 2, 5, 7, generator=torch.Generator().manual_seed(0))
    pool = nn.AdaptiveAvgPool2d((3, 4))
    alpha = x.exp() + 1
    with _ExportableOps():
        pooled, psi, other = pool(x), torch.digamma(alpha), torch.lgamma(alpha)
    assert torch.equal(pooled, adaptive_avg_pool2d(x, (3, 4)))
    assert torch.equal(psi, digamma(alpha))
    assert torch.equal(other, torch.lgamma(alpha))
    torch.testing.assert_close(pooled, pool(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(psi, torch.digamma(alpha), atol=1e-5, rtol=0)


@pytest.mark.parametrize('config,kind', [(ENSEMBLE, 'EnsembleSegmentor'),
                                         (MC_DROPOUT, 'MCDropoutSegmentor')])
def test_many_pass_configs_are_refused(tmp_path, config, kind):
    out = tmp_path / 'x.onnx'
    with pytest.raises(UnsupportedModelError, match=f'{kind}.*many forward passes.*[Dd]istil'):
        export_onnx_from_config(config, None, str(out))
    assert not out.exists()


def test_many_pass_model_object_is_refused(tmp_path):
    from mmengine.config import Config
    with mmseg_scope():
        model = MODELS.build(dict(type='MCDropoutSegmentor', num_samples=2,
                                  model=dict(model=Config.fromfile(PLAIN).model.to_dict())))
    with pytest.raises(UnsupportedModelError, match='many forward passes'):
        export_onnx(model, str(tmp_path / 'x.onnx'))


def test_head_that_samples_noise_is_refused(tmp_path):
    model = init_uncertainty_model(HETEROSCEDASTIC)
    with pytest.raises(UnsupportedModelError, match=r'HeteroscedasticHead.*torch\.randn'):
        export_onnx(model, str(tmp_path / 'x.onnx'), shape=(32, 64))


@pytest.fixture
def no_export(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError('torch.onnx.export must not run on bad input')
    monkeypatch.setattr(torch.onnx, 'export', refuse)


def test_unwritable_output_fails_before_export(tmp_path, no_export):
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    bad = blocker / 'model.onnx'  # a file's "subfolder"
    with pytest.raises(OSError, match=f'cannot write the ONNX file {re.escape(str(bad))}'):
        export_onnx_from_config(STUDENT, None, str(bad))
    with pytest.raises(IsADirectoryError, match=f'{re.escape(str(tmp_path))} is a folder'):
        export_onnx_from_config(STUDENT, None, str(tmp_path))


def test_missing_checkpoint_is_named(tmp_path, no_export, capsys):
    missing = str(tmp_path / 'nowhere' / 'iter_500.pth')
    with pytest.raises(FileNotFoundError, match=f'checkpoint {re.escape(missing)} does not exist'):
        export_onnx_from_config(STUDENT, missing, str(tmp_path / 'x.onnx'))
    # the tool: exit code 2 and the same message, no traceback
    spec = importlib.util.spec_from_file_location(
        'export_onnx_tool', osp.join(ROOT, 'tools', 'export_onnx.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([STUDENT, missing, '--out', str(tmp_path / 'x.onnx')]) == 2
    assert f'checkpoint {missing} does not exist' in capsys.readouterr().err
    assert not (tmp_path / 'x.onnx').exists()


def test_the_digamma_series_equals_torch_digamma():
    """The graph's ψ (ONNX has no digamma op) against torch's own, from
    near 0 to large concentrations, and NaN where ψ has its poles."""
    from mmseg_uncert.apis.onnx_export import digamma
    x = torch.cat([torch.logspace(-6, 8, 2000, dtype=torch.float64),
                   torch.tensor([0.5, 1.0, 2.0, 6.0, 7.5], dtype=torch.float64)])
    torch.testing.assert_close(digamma(x), torch.digamma(x), rtol=1e-9, atol=1e-9)
    assert torch.isnan(digamma(torch.tensor([0.0, -1.0, -2.5], dtype=torch.float64))).all()
