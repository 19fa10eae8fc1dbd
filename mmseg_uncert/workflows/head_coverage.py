"""Which of mmseg's decode heads a DualHead wraps: found from mmseg's own
shipped configs, so that a new mmseg version's new heads are checked too.

* :func:`shipped_head_configs` finds every decode-head type in mmseg's
  ``configs/`` and one config for each (the smallest model by its name);
* :func:`student_model_cfg` turns such a config's model into a one-pass
  uncertainty student: the (last) decode head wrapped in a DualHead, the
  segmentor an UncertaintyEncoderDecoder (or its cascade), random weights;
* :func:`check_head` builds the bare and the dual model with the same weights
  and compares their predictions and training losses, and
  :func:`coverage_table` prints the results as the docs' table.

``tools/head_coverage.py`` writes ``benchmarks/results/head_coverage.json``
and the tables; the test suite checks every head again and that the committed
results say what it finds.
"""
from __future__ import annotations

import copy
import glob
import os.path as osp
import re
from typing import Any

import torch
from mmengine.config import Config, ConfigDict
from torch import Tensor, nn

import mmseg
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmengine.structures import PixelData

from ..models.decode_heads.head_taps import UnsupportedHeadError
from ..models.segmentors.members import mmseg_scope
from ..models.segmentors.student_init import load_student_state

#: the segmentor a student of each mmseg segmentor type is built as
STUDENT_SEGMENTORS = {'EncoderDecoder': 'UncertaintyEncoderDecoder',
                      'CascadeEncoderDecoder': 'UncertaintyCascadeEncoderDecoder'}

#: what the shipped configs' other segmentors are, for the refusal message
_OTHER_SEGMENTORS = {
    'MultimodalEncoderDecoder': 'open-vocabulary: a text encoder embeds the class names '
                                'and the head matches them with CLIP features',
    'DepthEstimator': 'depth estimation: one value per pixel, no class scores'}

#: names that mark small models, best first: the config checked for a head
#: type is the first match (then the shortest name), so that the check is fast
_SMALL = ('r18', 'mit-b0', 'hr18s', 'mobilenet', 'fast', '23-slim', 'pidnet-s',
          'stdc1', 'vit-s', 'vit-b', 'mscan-t', 'swin-t', 'r50')

#: input sizes other than the default 64x64, with why
IMAGE_SIZES = {
    # LR-ASPP pools its deepest map (stride 8 in the shipped config) with a
    # 49x49 kernel: 8 x 49 = 392 px at least
    'LRASPPHead': (400, 400),
}

_HEAD_TYPE = re.compile(r"type\s*=\s*['\"](\w+Head)['\"]")
_BASE = re.compile(r"_base_\s*=\s*(\[[^\]]*\]|['\"][^'\"]*['\"])", re.S)


def mmseg_config_root() -> str:
    """mmseg's shipped configs: ``.mim/configs`` of an installed package, or
    ``configs/`` beside the package in a source checkout."""
    package = osp.dirname(mmseg.__file__)
    for root in (osp.join(package, '.mim', 'configs'),
                 osp.join(osp.dirname(package), 'configs')):
        if osp.isdir(root):
            return root
    raise FileNotFoundError(f'mmseg {mmseg.__version__} at {package} ships no configs '
                            f'(.mim/configs or ../configs); reinstall mmsegmentation')


def _texts(path: str, cache: dict[str, str]) -> str:
    """A config's text with its ``_base_`` files' texts (recursively)."""
    if path not in cache:
        cache[path] = ''  # guards against cycles
        with open(path) as f:
            text = f.read()
        bases = []
        for match in _BASE.finditer(text):
            bases += re.findall(r"['\"]([^'\"]+\.py)['\"]", match.group(1))
        cache[path] = text + ''.join(
            _texts(osp.normpath(osp.join(osp.dirname(path), base)), cache)
            for base in bases if '::' not in base
            and osp.isfile(osp.join(osp.dirname(path), base)))
    return cache[path]


def _decode_heads(model: ConfigDict) -> list[ConfigDict]:
    head = model.get('decode_head')
    return [] if head is None else list(head) if isinstance(head, list) else [head]


def shipped_head_configs(root: str | None = None) -> dict[str, str]:
    """``{decode head type: config path}`` for every decode-head type in
    mmseg's shipped configs, one config each (the final head of a cascade
    counts, and so do its earlier stages' types). Configs that cannot be
    loaded here (they import a package that is not installed) are skipped."""
    root = root or mmseg_config_root()
    paths = sorted(p for p in glob.glob(osp.join(root, '**', '*.py'), recursive=True)
                   if '_base_' not in p.split(osp.sep))
    cache: dict[str, str] = {}
    candidates: dict[str, list[str]] = {}
    for path in paths:
        for head_type in set(_HEAD_TYPE.findall(_texts(path, cache))):
            candidates.setdefault(head_type, []).append(path)

    def size_rank(path: str) -> tuple:
        name = osp.basename(path)
        rank = next((i for i, token in enumerate(_SMALL) if token in name), len(_SMALL))
        return rank, len(name), name

    found: dict[str, str] = {}
    loaded: dict[str, Any] = {}
    for head_type in sorted(candidates):
        for path in sorted(candidates[head_type], key=size_rank):
            if path not in loaded:
                try:
                    loaded[path] = Config.fromfile(path)
                except Exception:  # noqa: BLE001 - e.g. imports mmpretrain
                    loaded[path] = None
            cfg = loaded[path]
            if cfg is not None and 'model' in cfg and head_type in [
                    h.get('type') for h in _decode_heads(cfg.model)]:
                found[head_type] = osp.relpath(path, root)
                break
    return found


def _no_pretrained(cfg: Any) -> Any:
    """Random weights, nothing downloaded, plain BN: pretrained paths and
    ``Pretrained`` initialisers removed, SyncBN (which needs a process group)
    replaced by BN, everywhere in the model config."""
    if isinstance(cfg, dict):
        out = {}
        for key, value in cfg.items():
            if key == 'pretrained' and isinstance(value, str):
                continue
            if key == 'init_cfg' and 'Pretrained' in repr(value):
                continue
            if key == 'type' and value == 'SyncBN':
                value = 'BN'
            out[key] = _no_pretrained(value)
        return type(cfg)(out) if isinstance(cfg, ConfigDict) else out
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_no_pretrained(v) for v in cfg)
    return cfg


def bare_model_cfg(path: str, root: str | None = None) -> ConfigDict:
    """The model of a shipped config, with random weights (see
    :func:`_no_pretrained`)."""
    cfg = Config.fromfile(osp.join(root or mmseg_config_root(), path))
    model = ConfigDict(_no_pretrained(copy.deepcopy(cfg.model.to_dict())))
    model.pop('pretrained', None)
    model.pop('init_cfg', None)
    return model


def student_model_cfg(model: ConfigDict,
                      uncertainty_names: tuple[str, ...] = ('epistemic', 'aleatoric')
                      ) -> ConfigDict:
    """The one-pass uncertainty student of an mmseg model config: its
    (last) decode head in a DualHead, its segmentor the uncertainty one."""
    model = copy.deepcopy(model)
    if model['type'] not in STUDENT_SEGMENTORS:
        why = _OTHER_SEGMENTORS.get(model['type'], 'another kind of model')
        raise UnsupportedHeadError(
            f"its model is a {model['type']} ({why}), not an EncoderDecoder or "
            f"CascadeEncoderDecoder, which a one-pass DualHead student is built on")
    model['type'] = STUDENT_SEGMENTORS[model['type']]
    dual = dict(type='DualHead', uncertainty_names=uncertainty_names)
    if isinstance(model['decode_head'], list):
        model['decode_head'][-1] = dict(dual, head=model['decode_head'][-1])
    else:
        model['decode_head'] = dict(dual, head=model['decode_head'])
    return model


def build_model(model: ConfigDict, seed: int = 0) -> nn.Module:
    """Build a model config with seeded random weights (each layer's own
    initialisation; mmengine's ``init_weights`` is not needed for a check
    and takes seconds on a ViT-L)."""
    with mmseg_scope():
        torch.manual_seed(seed)
        return MODELS.build(model)


def synthetic_batch(num_classes: int, size: tuple[int, int], batch: int = 2,
                    seed: int = 0, ignored: bool = True
                    ) -> tuple[Tensor, list[SegDataSample]]:
    """Normalised-looking images and random labels (the top eighth ignored,
    label 255, when ``ignored``) for one training or test step."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    inputs = torch.randn(batch, 3, h, w, generator=g)
    samples = []
    for _ in range(batch):
        label = torch.randint(0, num_classes, (1, h, w), generator=g)
        if ignored:
            label[:, :h // 8] = 255
        # PIDNet's head also learns boundaries (mmseg's GenerateEdge gives
        # them): pixels whose right or lower neighbour has another class
        edge = torch.zeros_like(label)
        edge[:, :, :-1] |= (label[:, :, 1:] != label[:, :, :-1]).long()
        edge[:, :-1, :] |= (label[:, 1:, :] != label[:, :-1, :]).long()
        meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                    batch_input_shape=(h, w), padding_size=[0, 0, 0, 0],
                    scale_factor=(1.0, 1.0), flip=False)
        samples.append(SegDataSample(metainfo=meta, gt_sem_seg=PixelData(data=label),
                                     gt_edge_map=PixelData(data=edge)))
    return inputs, samples


def tiny_teacher(num_classes: int, data_preprocessor: dict | None) -> dict:
    """A small FCN on a ResNet-18, of another architecture than the students
    checked, as an ensemble member spec of random weights."""
    return dict(model=dict(
        type='EncoderDecoder', data_preprocessor=data_preprocessor,
        backbone=dict(type='ResNetV1c', depth=18, out_indices=(3, ),
                      norm_cfg=dict(type='BN')),
        decode_head=dict(type='FCNHead', in_channels=512, in_index=0, channels=32,
                         num_convs=1, num_classes=num_classes, dropout_ratio=0.0,
                         norm_cfg=dict(type='BN')),
        test_cfg=dict(mode='whole')))


def distiller_model_cfg(student: ConfigDict, num_classes: int) -> ConfigDict:
    """An EnsembleDistiller of ``student`` from :func:`tiny_teacher` (two
    members, seeded apart), with pixel KD, the uncertainty regression, pair-wise KD and
    feature mimic: every term that reads the student's head."""
    cfg = copy.deepcopy(student)
    cfg['type'] = 'EnsembleDistiller'
    member = tiny_teacher(num_classes, cfg.get('data_preprocessor'))
    cfg['teacher'] = [member, copy.deepcopy(member)]
    cfg['pairwise_loss'] = dict(type='PairwiseKDLoss', loss_weight=1.0)
    cfg['mimic_loss'] = dict(type='FeatureMimicLoss', loss_weight=1.0)
    return ConfigDict(cfg)


def check_head(head_type: str, path: str, root: str | None = None) -> dict[str, Any]:
    """Wrap ``head_type`` (from the shipped config ``path``) in a DualHead
    inside an EnsembleDistiller, with the bare model's weights, and compare.

    Returns ``dict(head, config, status, reason)`` and, for a supported head,
    what was measured: ``logits_equal`` (the student's predicted
    ``seg_logits`` against the bare model's), ``loss_equal`` (each of the
    bare model's training losses against the student's, auxiliary ones
    included), ``channels`` (C in ``seg_logits`` + K maps), ``maps`` (the
    names in ``pred_uncertainty``), ``distill_losses`` (the step's
    distillation terms, all finite) and ``branch_learns`` (the uncertainty
    branch got a gradient and changed in the optimiser step). A refused head
    has ``status='refused'`` and the error that names it and why.
    """
    result = dict(head=head_type, config=path)
    model = bare_model_cfg(path, root)
    size = IMAGE_SIZES.get(head_type, (64, 64))
    try:
        student_cfg = student_model_cfg(model)
        bare = build_model(model)
        student = build_model(distiller_model_cfg(student_cfg, bare.num_classes))
    except UnsupportedHeadError as error:
        return dict(result, status='refused', reason=_naming(head_type, error))
    load_student_state(student, bare.state_dict(), f'the bare {head_type} model')
    # mmseg 1.2.2's cross_entropy with a class_weight (PIDNet's configs)
    # indexes the weights by every label, 255 included, and fails on ignored
    # pixels: those models get none
    inputs, samples = synthetic_batch(bare.num_classes, size,
                                      ignored='class_weight' not in repr(model))

    def seeded(call, *args):
        torch.manual_seed(1)  # heads that draw random numbers (Hamburger's NMF)
        return call(*args)

    bare.eval(), student.eval()
    try:
        with torch.no_grad():
            expected = seeded(bare.predict, inputs, copy.deepcopy(samples))
            got = seeded(student.predict, inputs, copy.deepcopy(samples))
        # C class channels then the K maps, as the data samples carry them
        channels = got[0].seg_logits.data.shape[0] + len(got[0].pred_uncertainty.keys())
    except UnsupportedHeadError as error:
        return dict(result, status='refused', reason=_naming(head_type, error))
    bare.train(), student.train()
    bare_losses = seeded(bare.loss, inputs, copy.deepcopy(samples))
    losses = seeded(student.loss, inputs, copy.deepcopy(samples))
    branch = [p for n, p in student.named_parameters() if 'uncertainty_branch' in n]
    before = [p.detach().clone() for p in branch]
    trainable = [p for p in student.parameters() if p.requires_grad]
    optimiser = torch.optim.SGD(trainable, lr=0.01)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    grads = all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in branch)
    optimiser.step()
    return dict(
        result, status='supported', reason='',
        logits_equal=all(torch.equal(e.seg_logits.data, g.seg_logits.data)
                         for e, g in zip(expected, got)),
        loss_equal={k: bool(torch.equal(v, losses[k])) if k in losses else False
                    for k, v in bare_losses.items()},
        channels=int(channels), num_classes=int(bare.num_classes),
        maps=sorted(got[0].pred_uncertainty.keys()),
        distill_losses={k: float(v.detach()) for k, v in losses.items() if k.startswith('distill.')},
        branch_learns=grads and all(not torch.equal(b, p) for b, p in zip(before, branch)))


def _naming(head_type: str, error: Exception) -> str:
    """The refusal's message, starting with the head's name."""
    text = str(error)
    return text if head_type in text.split(':', 1)[0] else f'{head_type}: {text}'


def coverage_table(payload: dict[str, Any]) -> str:
    """The docs' table of a results file's payload: its date and summary,
    then one row per head type, supported or refused (why)."""
    results = payload['results']
    lines = [f"Checked {payload['date']} with mmseg {payload['mmseg']}: "
             f"{coverage_summary(results)}.", '',
             '| mmseg decode head | config checked | DualHead |', '| --- | --- | --- |']
    for r in sorted(results, key=lambda r: r['head']):
        status = 'supported' if r['status'] == 'supported' else f"refused: {r['reason']}"
        lines.append(f"| `{r['head']}` | `{r['config']}` | {status} |")
    return '\n'.join(lines)


#: the committed results of ``tools/head_coverage.py``, relative to the repository
RESULTS = osp.join('benchmarks', 'results', 'head_coverage.json')
#: the table sits between these lines in docs/components/dual_head.md
TABLE_MARKERS = ('<!-- head-coverage: begin (tools/head_coverage.py writes it) -->',
                 '<!-- head-coverage: end -->')


def coverage_summary(results: list[dict[str, Any]]) -> str:
    supported = sum(r['status'] == 'supported' for r in results)
    return (f'{supported} of {len(results)} decode-head types supported, '
            f'{len(results) - supported} refused')


def table_in(path: str) -> str:
    """The coverage table between :data:`TABLE_MARKERS` in a document."""
    with open(path) as f:
        text = f.read()
    begin, end = TABLE_MARKERS
    if begin not in text or end not in text:
        raise ValueError(f'{path} has no head-coverage markers {TABLE_MARKERS}')
    return text.split(begin, 1)[1].split(end, 1)[0].strip()


def write_table(path: str, table: str) -> None:
    """Replace the table between :data:`TABLE_MARKERS` in a document."""
    with open(path) as f:
        text = f.read()
    begin, end = TABLE_MARKERS
    table_in(path)  # the markers are there
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    with open(path, 'w') as f:
        f.write(f'{head}{begin}\n{table}\n{end}{tail}')
