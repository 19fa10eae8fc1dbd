"""Cost at Cityscapes size: training, inference and the metric, against mmseg's own.

    python benchmarks/scale.py             # the full run: about 60 min on 2 CPU cores
    python benchmarks/scale.py --quick     # every part at a quarter of the size, to try it
    python benchmarks/scale.py --tables    # the markdown tables of the results file
    python benchmarks/scale.py --readme    # the README's short table of it
    python benchmarks/scale.py --plot      # draw scale.png again from the results file

One run in one process. What it measures, with seeded random weights (time
and memory do not depend on the weights; nothing is downloaded):

* data: the synthetic street scenes at Cityscapes size (1024x2048) in the
  Cityscapes layout, read by mmseg's own Cityscapes pipelines
  (``mmseg::_base_/datasets/cityscapes.py``); the teachers' checkpoints are
  saved from random initialisation of mmseg's DeepLabV3+ R-50-D8 and
  R-101-D8 Cityscapes configs (``pretrained`` off).
* training, seconds per iteration (``model.train_step``: preprocessing,
  loss, backward, SGD update) and peak memory, batch 2 of 512x1024 crops of
  the train pipeline: the student of ``configs/distill_mbv3_cityscapes.py``
  as plain mmseg trains it (``EncoderDecoder``, MobileNetV3-large +
  DepthwiseSeparableASPPHead, no teacher, no uncertainty branch); the same
  student with the config's ``DualHead`` on labels only; distillation with
  M = 1, 2, 3 teachers (the config itself, its teachers cycled: R-50,
  R-101, R-50); the teachers' forward passes alone (``no_grad``, as the
  distiller runs them). The parts take turns, round after round, so that
  they share the machine's state; the first round measures memory (and
  warms up), the later ones time.
* inference at 1024x2048, batch 1 (``model.test_step`` under ``no_grad``,
  as ``tools/test.py`` runs it): both students; ensembles of M = 1, 2, 3, 5
  members (R-50, R-101 cycled; M = 2 is
  ``configs/ensemble/ensemble-2x_deeplabv3plus_r50-r101-d8_cityscapes-512x1024.py``)
  in whole and slide mode (512x1024 windows, stride 341x683, as that config),
  and M = 1, 5 with ``stream_members`` (each member built and loaded from
  its checkpoint for its pass); MC dropout of the R-50 (20 passes); TTA of the R-50 (6 views: scales
  0.75, 1, 1.25, each flipped or not); both students' ONNX graphs in
  onnxruntime.
* metric: seconds per image of ``UncertaintyMetric.process`` on the
  ``DualHead`` student's outputs at 1024x2048 with 19 and 150 classes
  (a 150-class student of the same architecture), against that student's
  ``test_step``, all of them in the same rounds as the students' calls;
  the once-per-run ``compute_metrics`` apart.
* growth: the students, one R-50 member and the metric at 256x512,
  512x1024 and 1024x2048, the sizes of each taking turns (the smaller
  ones several calls per turn); the ensembles and distillation against M;
  a plot.
* FLOPs of every model from mmengine's ``FlopAnalyzer`` (it counts one
  multiply-add as one FLOP; the JSON says MACs), composed for ensembles,
  slide windows, MC passes and TTA views, and the GPU time they imply at an
  assumed throughput (``ASSUMED_GPU_MACS``); with no GPU here, GPU time and
  memory are not measured.

Memory is the peak of tensor memory, as ``torch.cuda.max_memory_allocated``
gives it on a GPU: the bytes of the tensors alive before the call (weights,
buffers, optimizer state) plus the largest sum of the allocations and frees
the PyTorch profiler records from PyTorch's CPU allocator during the call
(oneDNN's scratch buffers go through it). Process RSS is not used: the
C allocator keeps freed memory, so RSS reports the history of the process.

Freed memory stays in the process, as ``CompatRunner`` (the runner of our
configs) keeps it on CPU (:func:`mmseg_uncert.engine.cpu_memory.keep_freed_memory`):
with glibc's default, every step faults its tensors in again from the OS,
which nearly doubled the training steps here.

On the CPU the teachers run in float32 (``teacher_autocast`` off): without
AVX-512-BF16 a bfloat16 DeepLabV3+ R-50 forward at 512x1024 did not finish
in 10 minutes on this machine, against 7 s in float32.

Writes ``benchmarks/results/scale.json`` and ``benchmarks/results/scale.png``.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import gc
import json
import os
import os.path as osp
import platform
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
DISTILL_CONFIG = 'configs/distill_mbv3_cityscapes.py'
ENSEMBLE_CONFIG = ('configs/ensemble/'
                   'ensemble-2x_deeplabv3plus_r50-r101-d8_cityscapes-512x1024.py')
#: the teachers, cycled for M members (M = 2 is the shipped configs' pair)
MEMBER_CONFIGS = {
    'r50': 'mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.py',
    'r101': 'mmseg::deeplabv3plus/deeplabv3plus_r101-d8_4xb2-80k_cityscapes-512x1024.py',
}
CYCLE = ('r50', 'r101')
#: assumed sustained GPU throughput for the implied times: 150 T multiply-adds
#: per second, about 30 % of an H100's dense bf16 tensor-core peak (989
#: TFLOP/s = 495 T MAC/s), what convolutional segmentation networks reach
#: in mixed precision; an assumption, not a measurement
ASSUMED_GPU_MACS = 150e12
SCORES = ['max_prob', 'entropy', 'std', 'epistemic', 'aleatoric']
MIB = 2 ** 20


# ----------------------------------------------------------------- measuring
def tensor_bytes(*objects: Any) -> int:
    """Bytes of the distinct tensor storages of modules (parameters, buffers,
    gradients) and optimizers (their state)."""
    seen: dict[int, int] = {}

    def add(t: Any) -> None:
        if isinstance(t, torch.Tensor):
            s = t.untyped_storage()
            seen[s.data_ptr()] = s.nbytes()

    for obj in objects:
        if isinstance(obj, nn.Module):
            for t in [*obj.parameters(), *obj.buffers()]:
                add(t)
                add(t.grad)
        elif isinstance(obj, torch.optim.Optimizer):
            for state in obj.state.values():
                for t in state.values():
                    add(t)
    return sum(seen.values())


def peak_allocation(call: Callable[[], Any]) -> tuple[float, int]:
    """(seconds, largest net bytes allocated at any moment of ``call``)
    from the profiler's memory events (allocations > 0, frees < 0)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        start = time.perf_counter()
        call()
        seconds = time.perf_counter() - start
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == '[memory]')
    now = peak = 0
    for _, nbytes in events:
        now += nbytes
        peak = max(peak, now)
    return seconds, peak


def timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


class Part:
    """One measured thing: its call, what it holds (for the static bytes),
    and its runs; a timed run makes ``repeat`` calls (small images: several,
    so that one slow call does not decide the median)."""

    def __init__(self, name: str, call: Callable[[], Any], holds: tuple = (),
                 repeat: int = 1, **info: Any) -> None:
        self.name, self.call, self.holds, self.info = name, call, holds, info
        self.repeat = repeat
        self.seconds: list[float] = []
        self.profiled_seconds: float | None = None
        self.peak_bytes: int | None = None

    def run(self, memory: bool) -> None:
        gc.collect()
        if memory:
            static = tensor_bytes(*self.holds)
            seconds, dynamic = peak_allocation(self.call)
            self.profiled_seconds, self.peak_bytes = seconds, static + dynamic
            self.info['static_bytes'] = static
            print(f'  {self.name}: {seconds:.2f} s, peak {self.peak_bytes / MIB:.0f} MiB',
                  flush=True)
        else:
            self.seconds += [timed(self.call) for _ in range(self.repeat)]
            print(f'  {self.name}: {self.seconds[-1]:.2f} s', flush=True)

    @property
    def time(self) -> float:
        """Median of the timed runs; the profiled run where there is none."""
        return statistics.median(self.seconds) if self.seconds else self.profiled_seconds

    def row(self) -> dict:
        row = dict(seconds=round(self.time, 3), seconds_runs=[round(s, 3) for s in self.seconds],
                   profiled_seconds=round(self.profiled_seconds, 3),
                   peak_mib=round(self.peak_bytes / MIB, 1))
        for key, value in self.info.items():
            if key == 'static_bytes':
                row['static_mib'] = round(value / MIB, 1)
            else:
                row[key] = value
        return row


def take_turns(parts: list[Part], timed_rounds: int) -> None:
    """A profiled round (memory; it also warms up), then the timed rounds,
    the parts in turn within each."""
    for r in range(1 + timed_rounds):
        print(f'round {r}' + (' (memory)' if r == 0 else ''), flush=True)
        for part in parts:
            part.run(memory=r == 0)


# --------------------------------------------------------------- the models
def member_checkpoints(work: str) -> dict[str, str]:
    """Random-initialised teachers saved as checkpoints (nothing downloaded)."""
    from mmseg.registry import MODELS
    from mmseg_uncert.models.segmentors import drop_pretrained, load_config, mmseg_scope
    paths = {}
    for seed, (name, config) in enumerate(MEMBER_CONFIGS.items()):
        cfg = load_config(config).model
        drop_pretrained(cfg)
        torch.manual_seed(seed)
        with mmseg_scope():
            model = MODELS.build(cfg)
        model.init_weights()
        paths[name] = osp.join(work, f'{name}.pth')
        torch.save(dict(state_dict=model.state_dict(), meta={}), paths[name])
        del model
    return paths


def members(m: int, checkpoints: dict[str, str]) -> list[dict]:
    return [dict(config=MEMBER_CONFIGS[CYCLE[i % 2]], checkpoint=checkpoints[CYCLE[i % 2]])
            for i in range(m)]


def build(cfg: dict, initialise: bool = False) -> nn.Module:
    """The model of ``cfg``; ``initialise``: its ``init_weights`` run, without
    mmengine's per-parameter log."""
    from mmengine.config import ConfigDict
    from mmengine.logging import MMLogger
    from mmseg.registry import MODELS
    from mmseg_uncert.models.segmentors.members import mmseg_scope
    with mmseg_scope():
        model = MODELS.build(ConfigDict(copy.deepcopy(cfg)))
    if initialise:
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel('WARNING')
        try:
            model.init_weights()
        finally:
            logger.setLevel(level)
    return model


def student_cfg(distill: Any, plain: bool, num_classes: int = 19) -> dict:
    """The distillation config's student: its backbone and DualHead in an
    UncertaintyEncoderDecoder, or (``plain``) its inner head in mmseg's
    EncoderDecoder, as mmseg trains it."""
    head = copy.deepcopy(distill.model.decode_head.to_dict())
    head['head']['num_classes'] = num_classes
    return dict(type='EncoderDecoder' if plain else 'UncertaintyEncoderDecoder',
                data_preprocessor=distill.model.data_preprocessor.to_dict(),
                backbone=distill.model.backbone.to_dict(),
                decode_head=head['head'] if plain else head,
                train_cfg={}, test_cfg=dict(mode='whole'))


def optimizer_for(model: nn.Module, distill: Any) -> Any:
    from mmengine.optim import build_optim_wrapper
    cfg = copy.deepcopy(distill.optim_wrapper.to_dict())
    from mmseg_uncert.models.segmentors.members import mmseg_scope
    if not hasattr(model, 'teacher'):
        cfg.pop('constructor', None)
    with mmseg_scope():
        return build_optim_wrapper(model, cfg)


def batch(dataset_cfg: dict, data_root: str, indices: list[int]) -> dict:
    from mmengine.dataset import pseudo_collate
    from mmseg.registry import DATASETS
    from mmseg_uncert.models.segmentors.members import mmseg_scope
    cfg = copy.deepcopy(dataset_cfg)
    cfg['data_root'] = data_root
    with mmseg_scope():
        dataset = DATASETS.build(cfg)
    return pseudo_collate([dataset[i] for i in indices])


# -------------------------------------------------------------------- FLOPs
def macs(model: nn.Module, size: tuple[int, int]) -> int:
    """Multiply-adds of one whole-image ``inference`` at ``size`` (batch 1)."""
    from mmengine.analysis import FlopAnalyzer
    from mmengine.config import ConfigDict

    class Inference(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            meta = dict(img_shape=size, pad_shape=size, ori_shape=size)
            return self.model.inference(x, [meta])

    saved = model.test_cfg
    model.test_cfg = ConfigDict(mode='whole')
    try:
        with torch.no_grad():
            analyzer = FlopAnalyzer(Inference().eval(), torch.zeros(1, 3, *size))
            analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return int(analyzer.total())
    finally:
        model.test_cfg = saved


def slide_windows(size: tuple[int, int], crop: tuple[int, int],
                  stride: tuple[int, int]) -> int:
    """Windows of mmseg's ``slide_inference`` over an image of ``size``."""
    rows = max(size[0] - crop[0] + stride[0] - 1, 0) // stride[0] + 1
    cols = max(size[1] - crop[1] + stride[1] - 1, 0) // stride[1] + 1
    return rows * cols


# --------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='a quarter of every size (to try the script)')
    parser.add_argument('--rounds', type=int, default=2,
                        help='timed rounds after the memory round (default: 2)')
    parser.add_argument('--out', default=osp.join(ROOT, 'benchmarks', 'results', 'scale.json'))
    parser.add_argument('--tables', action='store_true',
                        help='print the markdown tables of the results file --out and stop')
    parser.add_argument('--readme', action='store_true',
                        help="print the README's short table of the results file --out and stop")
    parser.add_argument('--plot', action='store_true',
                        help='draw the figure of the results file --out again and stop')
    args = parser.parse_args()
    if args.tables or args.readme or args.plot:
        with open(args.out) as f:
            result = json.load(f)
        if args.plot:
            plot(result, args.out[:-len('.json')] + '.png')
        else:
            print((tables if args.tables else readme_table)(result))
        return

    import mmseg
    from mmengine.config import Config
    from mmseg_uncert.datasets.synthetic_streets import SceneSpec, generate
    from mmseg_uncert.evaluation import UncertaintyMetric
    from mmseg_uncert.apis.onnx_export import export_onnx, onnx_session
    import mmseg_uncert

    from mmseg_uncert.engine.cpu_memory import keep_freed_memory
    kept = keep_freed_memory()  # as CompatRunner does on CPU
    k = 4 if args.quick else 1
    full = (1024 // k, 2048 // k)
    crop = (512 // k, 1024 // k)
    stride = (341 // k, 683 // k)
    sizes = [(256 // k, 512 // k), (512 // k, 1024 // k), full]
    mc_passes, tta = 20, dict(scales=(0.75, 1.0, 1.25), flips=(False, True))
    load = os.getloadavg()[0]
    torch.manual_seed(0)
    work = tempfile.mkdtemp(prefix='scale_')
    print(f'data and checkpoints in {work}', flush=True)
    for h, w in sizes:
        generate(osp.join(work, f'data_{h}x{w}'), {'train': 2, 'val': 1} if (h, w) == full
                 else {'val': 1}, seed=0, spec=SceneSpec(h, w), workers=1)
    data_root = osp.join(work, f'data_{full[0]}x{full[1]}')
    ckpt = member_checkpoints(work)

    distill = Config.fromfile(osp.join(ROOT, DISTILL_CONFIG))
    distill.model.pretrained = None
    distill.model.teacher_autocast = False
    train_set = distill.train_dataloader.dataset.to_dict()
    for t in train_set['pipeline']:
        if t['type'] == 'RandomResize':
            t['scale'] = (full[1], full[0])
        if t['type'] == 'RandomCrop':
            t['crop_size'] = crop
    distill.model.data_preprocessor.size = crop
    test_set = distill.test_dataloader.dataset.to_dict()
    np.random.seed(0)  # the train pipeline's random resize and crop

    # ------------------------------------------------------------- training
    train_batch = batch(train_set, data_root, [0, 1])
    parts: list[Part] = []
    plain = build(student_cfg(distill, plain=True), initialise=True)
    dual = build(student_cfg(distill, plain=False), initialise=True)
    for name, model in (('plain student', plain), ('DualHead student', dual)):
        optim = optimizer_for(model.train(), distill)
        parts.append(Part(name, lambda m=model, o=optim: m.train_step(train_batch, o),
                          (model, optim)))
    distillers = {}
    for m in (1, 2, 3):
        cfg = distill.model.to_dict()
        cfg['teacher']['members'] = members(m, ckpt)
        model = build(cfg, initialise=True)
        distillers[m] = model
        optim = optimizer_for(model.train(), distill)
        teacher = model.teacher
        inputs = model.data_preprocessor(train_batch, True)['inputs']
        metas = [s.metainfo for s in train_batch['data_samples']]

        def teacher_pass(t=teacher, x=inputs, metas=metas) -> None:
            with torch.no_grad():
                for _ in t.member_probabilities(x, metas):
                    pass

        parts.append(Part(f'distillation M={m}',
                          lambda d=model, o=optim: d.train_step(train_batch, o),
                          (model, optim), teachers=[CYCLE[i % 2] for i in range(m)]))
        parts.append(Part(f'teacher forward M={m}', teacher_pass, (teacher,)))
    print('training', flush=True)
    take_turns(parts, args.rounds)
    # the largest teacher alone (memory only), as the distiller runs it
    r101 = build(dict(type='EnsembleSegmentor', members=members(2, ckpt)[1:])).eval()
    x = distillers[2].data_preprocessor(train_batch, True)['inputs']
    metas = [s.metainfo for s in train_batch['data_samples']]

    def r101_pass() -> None:
        with torch.no_grad():
            for _ in r101.member_probabilities(x, metas):
                pass

    largest = Part('teacher forward R-101 alone', r101_pass, (r101,))
    largest.run(memory=True)
    training = {p.name: p.row() for p in [*parts, largest]}
    del distillers, parts, x, r101, largest
    gc.collect()

    # ------------------------------------------------------------ inference
    def test_call(model: nn.Module, data: dict) -> Callable[[], Any]:
        def call() -> Any:
            with torch.no_grad():
                return model.test_step(data)
        return call

    test_data = {size: batch(test_set | dict(
        pipeline=[dict(t, scale=(size[1], size[0])) if t['type'] == 'Resize' else t
                  for t in test_set['pipeline']]),
        osp.join(work, f'data_{size[0]}x{size[1]}'), [0]) for size in sizes}
    for model in (plain, dual):
        model.eval()
    inference: list[Part] = []
    growth: list[Part] = []

    def repeats(size: tuple[int, int]) -> int:
        """Calls per timed run: about half as many as the image is smaller
        than the full one (8 at 256x512, 2 at 512x1024, 1 at full size)."""
        return max(1, round(full[0] * full[1] / (size[0] * size[1]) / 2))

    for name, model in (('plain student', plain), ('DualHead student', dual)):
        for size in sizes:
            label = name if size == full else f'{name} {size[0]}x{size[1]}'
            part = Part(label, test_call(model, test_data[size]),
                        (model,), repeat=repeats(size), size=list(size))
            (inference if size == full else growth).append(part)
    ensembles = {}
    for mode in ('whole', 'slide'):
        for m in (1, 2, 3, 5):
            test_cfg = (dict(mode='whole') if mode == 'whole' else
                        dict(mode='slide', crop_size=crop, stride=stride))
            ensembles[mode, m] = build(dict(type='EnsembleSegmentor', members=members(m, ckpt),
                                            test_cfg=test_cfg)).eval()
            inference.append(Part(f'ensemble M={m} {mode}',
                                  test_call(ensembles[mode, m], test_data[full]),
                                  (ensembles[mode, m],), mode=mode, members=m))
        # the same members streamed: each built and loaded for its pass
        for m in (1, 5):
            streamed = build(dict(type='EnsembleSegmentor', members=members(m, ckpt),
                                  test_cfg=test_cfg, stream_members=True)).eval()
            inference.append(Part(f'ensemble M={m} {mode} streamed',
                                  test_call(streamed, test_data[full]), (streamed,),
                                  mode=mode, members=m, stream_members=True))
    member_one = ensembles['whole', 1]
    for size in sizes:
        growth.append(Part(f'R-50 member {size[0]}x{size[1]}',
                           test_call(member_one, test_data[size]), (member_one,),
                           repeat=repeats(size), size=list(size)))
    mc = build(dict(type='MCDropoutSegmentor', model=members(1, ckpt)[0],
                    num_samples=mc_passes)).eval()
    inference.append(Part(f'MC dropout R-50 ({mc_passes} passes)', test_call(mc, test_data[full]),
                          (mc,), passes=mc_passes))
    tta_model = build(dict(type='TTASegmentor', model=members(1, ckpt)[0], **tta)).eval()
    inference.append(Part('TTA R-50 (6 views)', test_call(tta_model, test_data[full]),
                          (tta_model,), **{k_: list(v) for k_, v in tta.items()}))
    print('warm-up', flush=True)
    for warm in (test_call(member_one, test_data[full]), test_call(plain, test_data[full]),
                 test_call(dual, test_data[full])):
        warm()
    with torch.no_grad():  # the slide windows' shape, R-50 and R-101
        for member in ensembles['whole', 2].members:
            member.inference(torch.zeros(1, 3, *crop), [dict(img_shape=crop, pad_shape=crop,
                                                             ori_shape=crop)])
    # the metric on the DualHead student's outputs, 19 classes at the three
    # sizes and 150 at full size: its goal is a share of that student's
    # test_step, so the two are timed in the same rounds (the fourth and
    # fifth runs timed them in different phases: 9.96 and 11.3 % with the
    # same metric code)
    metric_parts: list[Part] = []
    metric_results = {}

    def metric_part(classes: int, model: nn.Module, size: tuple[int, int]) -> Part:
        data = test_data[size]
        samples = [s.to_dict() for s in test_call(model, data)()]
        metric = UncertaintyMetric(scores=SCORES)
        name = f'UncertaintyMetric {classes} classes {size[0]}x{size[1]}'
        metric_results[name] = metric
        return Part(name, lambda m=metric, d=data, s=samples: m.process(d, s), (),
                    repeat=repeats(size), classes=classes, size=list(size))

    metric_parts += [metric_part(19, dual, size) for size in sizes]
    student_150 = build(student_cfg(distill, plain=False, num_classes=150), initialise=True)
    student_150.eval()
    metric_parts += [metric_part(150, student_150, full),
                     Part(f'DualHead student 150 classes {full[0]}x{full[1]}',
                          test_call(student_150, test_data[full]), (student_150,),
                          size=list(full))]
    # both students, the R-50 member, the metric at the three sizes and the
    # 150-class metric and student take turns: the growth with pixels and
    # with classes compares calls made side by side (the students'
    # full-size parts are also their inference rows)
    print('students, metric and growth', flush=True)
    take_turns([*inference[:2], *growth, *metric_parts], args.rounds)
    print('inference', flush=True)
    for part in inference[2:]:
        part.run(memory=True)

    # ONNX graphs of both students (traced at the crop size; height and width
    # are dynamic) run at full size by onnxruntime on all cores, taking turns
    image = torch.rand(1, 3, *full, generator=torch.Generator().manual_seed(1)) * 255
    graphs = {}
    for name, model in (('plain student', plain), ('DualHead student', dual)):
        path = osp.join(work, f'{name.split()[0]}.onnx')
        written = export_onnx(model, path, shape=crop)
        session = onnx_session(path, torch.get_num_threads())
        feed = {written.input_name: image.numpy()}
        session.run(None, feed)  # warm-up
        graphs[name] = (session, feed, written.output_names, [])
    for _ in range(1 + 2 * args.rounds):
        for name, (session, feed, _, runs) in graphs.items():
            runs.append(timed(lambda: session.run(None, feed)))
    onnx_rows = {name: dict(seconds=round(statistics.median(runs), 3),
                            seconds_runs=[round(s, 3) for s in runs], outputs=outputs)
                 for name, (_, _, outputs, runs) in graphs.items()}
    for name, row in onnx_rows.items():
        print(f'  onnx {name}: {row["seconds"]} s', flush=True)

    # --------------------------------------------------------------- metric
    compute_seconds = {}
    for name, metric in metric_results.items():
        start = time.perf_counter()
        metric.compute_metrics(metric.results)
        compute_seconds[name] = round(time.perf_counter() - start, 3)

    # ---------------------------------------------------------------- FLOPs
    print('FLOPs', flush=True)
    flops = {}
    for name, model in (('plain student', plain), ('DualHead student', dual),
                        ('DeepLabV3+ R-50-D8', ensembles['whole', 2].members[0]),
                        ('DeepLabV3+ R-101-D8', ensembles['whole', 2].members[1])):
        flops[name] = {f'{s[0]}x{s[1]}': macs(model, s) for s in (crop, full)}
        print(f'  {name}: {flops[name]}', flush=True)

    result = report(args, load, full, crop, stride, training, inference, growth,
                    onnx_rows, metric_parts, compute_seconds, flops, mc_passes, tta)
    result['cpu_freed_memory_kept'] = kept
    result['versions'] = dict(python=platform.python_version(), torch=torch.__version__,
                              mmseg=mmseg.__version__, mmseg_uncert=mmseg_uncert.__version__)
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2)
    plot(result, args.out[:-len('.json')] + '.png')
    shutil.rmtree(work)  # the generated images, checkpoints and graphs
    print(f'wrote {args.out}')


def report(args: argparse.Namespace, load: float, full: tuple[int, int], crop: tuple[int, int],
           stride: tuple[int, int], training: dict, inference: list[Part], growth: list[Part],
           onnx_rows: dict, metric_parts: list[Part], compute_seconds: dict, flops: dict,
           mc_passes: int, tta: dict) -> dict:
    """The results and the goals, from the measured parts."""
    inf = {p.name: p.row() for p in [*inference]}
    grow = {p.name: p.row() for p in growth}
    met = {p.name: p.row() for p in metric_parts}
    F = f'{full[0]}x{full[1]}'
    C = f'{crop[0]}x{crop[1]}'
    member_macs = {'r50': flops['DeepLabV3+ R-50-D8'], 'r101': flops['DeepLabV3+ R-101-D8']}
    windows = slide_windows(full, crop, stride)
    implied = {}
    # training: forward and backward of the student ~ 3 forwards; teachers forward only
    student_train = 3 * 2 * flops['plain student'][C]
    implied['training plain student'] = student_train
    implied['training DualHead student'] = 3 * 2 * flops['DualHead student'][C]
    for m in (1, 2, 3):
        teachers = sum(2 * member_macs[CYCLE[i % 2]][C] for i in range(m))
        implied[f'training distillation M={m}'] = implied['training DualHead student'] + teachers
    implied['inference plain student'] = flops['plain student'][F]
    implied['inference DualHead student'] = flops['DualHead student'][F]
    for m in (1, 2, 3, 5):
        names = [CYCLE[i % 2] for i in range(m)]
        implied[f'inference ensemble M={m} whole'] = sum(member_macs[n][F] for n in names)
        implied[f'inference ensemble M={m} slide'] = windows * sum(member_macs[n][C] for n in names)
        for mode in ('whole', 'slide'):
            implied[f'inference ensemble M={m} {mode} streamed'] = implied[
                f'inference ensemble M={m} {mode}']
    implied[f'inference MC dropout R-50 ({mc_passes} passes)'] = mc_passes * member_macs['r50'][F]
    # a view at scale s costs s² of the full-size pass (convolutions)
    implied['inference TTA R-50 (6 views)'] = round(
        len(tta['flips']) * sum(s * s for s in tta['scales']) * member_macs['r50'][F])
    flops_rows = dict(
        counting='mmengine FlopAnalyzer: one multiply-add counted once (MACs); batch 1',
        assumed_gpu_macs_per_second=ASSUMED_GPU_MACS,
        models=flops, slide_windows=windows,
        parts={k: dict(gmacs=round(v / 1e9, 1),
                       implied_gpu_seconds=round(v / ASSUMED_GPU_MACS, 4))
               for k, v in implied.items()})
    # the CPU's achieved rate, from the measured times
    for key, seconds in (('inference plain student', inf['plain student']['seconds']),
                         ('inference ensemble M=1 whole', inf['ensemble M=1 whole']['seconds'])):
        flops_rows['parts'][key]['cpu_gmacs_per_second'] = round(implied[key] / seconds / 1e9, 1)

    t = {k: v['seconds'] for k, v in training.items()}
    mem = {k: v['peak_mib'] for k, v in training.items()}
    goals = []

    def goal(name: str, value: float, limit: float, smaller: bool = True, **extra) -> None:
        goals.append(dict(goal=name, value=round(value, 3), limit=round(limit, 3),
                          met=bool(value <= limit if smaller else value >= limit), **extra))

    largest_teacher = max(mem['teacher forward M=1'], mem['teacher forward R-101 alone'])
    for m in (1, 2, 3):
        goal(f'distillation step / (plain student step + teacher forwards), M={m}',
             t[f'distillation M={m}'] / (t['plain student'] + t[f'teacher forward M={m}']), 1.10)
        goal(f'distillation peak memory / (plain training + largest teacher inference), M={m}',
             mem[f'distillation M={m}'] / (mem['plain student'] + largest_teacher), 1.0)
    goal('DualHead student inference / plain student (test_step)',
         inf['DualHead student']['seconds'] / inf['plain student']['seconds'], 1.15)
    goal('DualHead student ONNX / plain student ONNX (onnxruntime)',
         onnx_rows['DualHead student']['seconds'] / onnx_rows['plain student']['seconds'], 1.15)
    for mode in ('whole', 'slide'):
        goal(f'ensemble peak memory M=5 / M=1 ({mode}, members resident)',
             inf[f'ensemble M=5 {mode}']['peak_mib'] / inf[f'ensemble M=1 {mode}']['peak_mib'], 1.3)
        goal(f'ensemble peak memory M=5 / M=1 ({mode}, stream_members)',
             inf[f'ensemble M=5 {mode} streamed']['peak_mib']
             / inf[f'ensemble M=1 {mode} streamed']['peak_mib'], 1.3)
    m19 = met[f'UncertaintyMetric 19 classes {F}']['seconds']
    m150 = met[f'UncertaintyMetric 150 classes {F}']['seconds']
    goal('UncertaintyMetric / DualHead student test_step, 19 classes',
         m19 / inf['DualHead student']['seconds'], 0.10)
    goal('UncertaintyMetric 150 / 19 classes (linear: at most 150/19)', m150 / m19, 150 / 19)
    small = f'{256 // (4 if args.quick else 1)}x{512 // (4 if args.quick else 1)}'
    pairs = {
        'plain student': (grow[f'plain student {small}'], inf['plain student']),
        'DualHead student': (grow[f'DualHead student {small}'], inf['DualHead student']),
        'R-50 member': (grow[f'R-50 member {small}'], grow[f'R-50 member {F}']),
        'UncertaintyMetric 19 classes': (met[f'UncertaintyMetric 19 classes {small}'],
                                         met[f'UncertaintyMetric 19 classes {F}']),
    }
    for name, (a, b) in pairs.items():
        ratio = b['seconds'] / a['seconds']
        goals.append(dict(goal=f'time {F} / {small}, {name} (16 within 20 %)',
                          value=round(ratio, 2), limit=[12.8, 19.2],
                          met=bool(12.8 <= ratio <= 19.2),
                          memory_ratio=round(b['peak_mib'] / a['peak_mib'], 2)))
    return dict(
        date=datetime.date.today().isoformat(),
        machine=dict(cores=os.cpu_count(), torch_threads=torch.get_num_threads(),
                     processor=platform.processor() or platform.machine(),
                     load_average_at_start=round(load, 2), device='cpu'),
        measured=('CPU: seconds by time.perf_counter (median of the timed rounds); '
                  'peak tensor memory from the PyTorch profiler (see the docstring); '
                  'no GPU was measured'),
        weights='seeded random initialisation (cost does not depend on the weights)',
        quick=args.quick, image=list(full), crop=list(crop), train_batch=2,
        slide=dict(crop=list(crop), stride=list(stride)), timed_rounds=args.rounds,
        teacher_precision='float32 (teacher_autocast off on CPU)',
        configs=dict(distillation=DISTILL_CONFIG, ensemble=ENSEMBLE_CONFIG,
                     members=MEMBER_CONFIGS),
        training=training, inference=inf,
        onnx=onnx_rows, growth=grow,
        metric=dict(parts=met, compute_metrics_seconds=compute_seconds, scores=SCORES),
        flops=flops_rows, goals=goals)


def tables(result: dict) -> str:
    """The results as markdown: training, inference, metric, growth, goals."""
    def mib(row: dict) -> str:
        return f"{row['peak_mib'] / 1024:.2f}"

    gpu = result['flops']['parts']
    out = ['| training step, batch 2 of ' + 'x'.join(map(str, result['crop']))
           + ' crops | s / iteration | peak GiB | GMACs | implied GPU ms |',
           '| --- | ---: | ---: | ---: | ---: |']
    for name, row in result['training'].items():
        key = f'training {name}'
        flops = (f"{gpu[key]['gmacs']:.0f} | {gpu[key]['implied_gpu_seconds'] * 1e3:.1f}"
                 if key in gpu else '– | –')
        out.append(f"| {name} | {row['seconds']:.2f} | {mib(row)} | {flops} |")
    out += ['', '| inference, one ' + 'x'.join(map(str, result['image']))
            + ' image | s / image | peak GiB | GMACs | implied GPU ms |',
            '| --- | ---: | ---: | ---: | ---: |']
    for name, row in result['inference'].items():
        key = f'inference {name}'
        out.append(f"| {name} | {row['seconds']:.2f} | {mib(row)} | {gpu[key]['gmacs']:.0f} | "
                   f"{gpu[key]['implied_gpu_seconds'] * 1e3:.1f} |")
    for name, row in result['onnx'].items():
        out.append(f"| {name}, ONNX in onnxruntime | {row['seconds']:.2f} | – | – | – |")
    out += ['', '| UncertaintyMetric.process, one image | s / image | peak GiB |'
            ' the model\'s test_step, s |', '| --- | ---: | ---: | ---: |']
    parts = result['metric']['parts']
    for name, row in parts.items():
        if not name.startswith('UncertaintyMetric'):
            continue
        size = 'x'.join(map(str, row['size']))
        model = (f"DualHead student 150 classes {size}" if row['classes'] == 150 else
                 'DualHead student' if row['size'] == result['image'] else
                 f'DualHead student {size}')
        step = {**result['inference'], **result['growth'], **parts}[model]['seconds']
        out.append(f"| {row['classes']} classes, {size} | {row['seconds']:.3f} | {mib(row)} "
                   f"| {step:.2f} |")
    inf = result['inference']
    out += ['', '| ensemble memory, M = 5 / M = 1 | members resident | less their weights '
            'and buffers | stream_members | time, streamed / resident (M = 5) |',
            '| --- | ---: | ---: | ---: | ---: |']
    for mode in ('whole', 'slide'):
        five, one = inf[f'ensemble M=5 {mode}'], inf[f'ensemble M=1 {mode}']
        activations = ((five['peak_mib'] - five['static_mib'])
                       / (one['peak_mib'] - one['static_mib']))
        s5, s1 = inf[f'ensemble M=5 {mode} streamed'], inf[f'ensemble M=1 {mode} streamed']
        out.append(f"| {mode} | {five['peak_mib'] / one['peak_mib']:.2f} | {activations:.2f} | "
                   f"{s5['peak_mib'] / s1['peak_mib']:.2f} | "
                   f"{s5['seconds'] / five['seconds']:.2f} |")
    out += ['', '| goal | measured | limit | met |', '| --- | ---: | ---: | :---: |']
    for g in result['goals']:
        limit = g['limit'] if not isinstance(g['limit'], list) else '–'.join(map(str, g['limit']))
        out.append(f"| {g['goal']} | {g['value']} | {limit} | {'yes' if g['met'] else '**no**'} |")
    return '\n'.join(out)


def readme_table(result: dict) -> str:
    """The README's short table: what a user choosing between plain mmseg
    training and our distillation, and sizing an ensemble, asks first."""
    t, i = result['training'], result['inference']
    met = result['metric']['parts']
    F = 'x'.join(map(str, result['image']))
    crop = 'x'.join(map(str, result['crop']))

    def row(what: str, part: dict, per: str) -> str:
        seconds = part['seconds']
        shown = f'{seconds:.1f}' if seconds >= 1 else f'{seconds:.2f}'
        return f"| {what} | {shown} s / {per} | {part['peak_mib'] / 1024:.2f} |"

    lines = ['| part (2 CPU cores, float32) | time | peak GiB |', '| --- | ---: | ---: |',
             row(f'training step, batch 2 of {crop}: the student as plain mmseg trains it',
                 t['plain student'], 'iteration'),
             row('… distilled from 2 teachers (R-50, R-101: the shipped config)',
                 t['distillation M=2'], 'iteration'),
             row(f'inference, {F}: the plain student', i['plain student'], 'image'),
             row('… the `DualHead` student (segmentation and uncertainty)',
                 i['DualHead student'], 'image'),
             row('… ensemble of 2 (the shipped config, whole image)',
                 i['ensemble M=2 whole'], 'image'),
             row('… ensemble of 5, members resident', i['ensemble M=5 whole'], 'image'),
             row('… ensemble of 5, `stream_members=True`',
                 i['ensemble M=5 whole streamed'], 'image'),
             row('`UncertaintyMetric`, 19 classes, five scores',
                 met[f'UncertaintyMetric 19 classes {F}'], 'image')]
    return '\n'.join(lines)


def plot(result: dict, path: str) -> None:
    """Time and memory against pixels (log-log), and against M."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    F = 'x'.join(map(str, result['image']))
    rows = {**result['growth'], **result['inference'], **result['metric']['parts']}
    series = {
        'plain student': lambda s: f'plain student {s}' if s != F else 'plain student',
        'DualHead student': lambda s: f'DualHead student {s}' if s != F else 'DualHead student',
        'R-50 member': lambda s: f'R-50 member {s}',
        'UncertaintyMetric (19 classes)': lambda s: f'UncertaintyMetric 19 classes {s}',
    }
    sizes = sorted({tuple(r['size']) for r in result['growth'].values()})
    pixels = [h * w for h, w in sizes]
    for label, key in series.items():
        names = [key(f'{h}x{w}') for h, w in sizes]
        axes[0].loglog(pixels, [rows[n]['seconds'] for n in names], 'o-', label=label)
        axes[1].loglog(pixels, [rows[n]['peak_mib'] for n in names], 'o-', label=label)
    ref = rows['ensemble M=1 whole']['seconds']
    axes[0].loglog(pixels, [ref * p / pixels[-1] for p in pixels], 'k:', label='linear')
    axes[0].set(ylabel='seconds per image', title='time vs size')
    axes[1].set(ylabel='peak tensor MiB', title='memory vs size')
    for ax in axes[:2]:  # one tick per measured size (log scale of pixels)
        ax.set_xticks(pixels, [f'{h}x{w}' for h, w in sizes])
        ax.minorticks_off()
        ax.set_xlabel('image size (pixels, log scale)')
    ms = (1, 2, 3, 5)
    for mode in ('whole', 'slide'):
        axes[2].plot(ms, [result['inference'][f'ensemble M={m} {mode}']['seconds'] for m in ms],
                     'o-', label=f'ensemble {mode}, s/image')
    axes[2].plot((1, 2, 3), [result['training'][f'distillation M={m}']['seconds']
                             for m in (1, 2, 3)], 's-', label='distillation, s/iteration')
    axes[2].plot((1, 2, 3), [result['training']['plain student']['seconds']
                             + result['training'][f'teacher forward M={m}']['seconds']
                             for m in (1, 2, 3)], 'k:', label='plain step + teacher forwards')
    axes[2].set(xlabel='members M (R-50, R-101 cycled)', ylabel='seconds',
                title=f'time vs M ({F} inference; training: batch 2)')
    inf = result['inference']
    for mode, colour in (('whole', 'C0'), ('slide', 'C1')):
        axes[3].plot(ms, [inf[f'ensemble M={m} {mode}']['peak_mib'] / 1024 for m in ms],
                     'o-', color=colour, label=f'ensemble {mode}, members resident')
        axes[3].plot((1, 5), [inf[f'ensemble M={m} {mode} streamed']['peak_mib'] / 1024
                              for m in (1, 5)],
                     'D', color=colour,  # M = 1 and 5 only: no line between them
                     label=f'ensemble {mode}, stream_members (M = 1, 5)')
    axes[3].set(xlabel='members M (R-50, R-101 cycled)', ylabel='peak tensor GiB',
                title=f'ensemble memory vs M ({F} inference)')
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, which='both')
    fig.suptitle(f'mmseg-uncert at Cityscapes size, {result["machine"]["cores"]}-core CPU, '
                 f'{result["date"]}', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == '__main__':
    main()
