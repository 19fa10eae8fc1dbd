"""Export a deployed segmentor as one ONNX graph: class logits and named
uncertainty maps from one forward pass.

The graph (what a deploying engineer feeds and gets back):

* input ``image``: float32 (N, 3, H, W), pixel values 0..255 in the channel
  order ``input_channel_order`` (default ``'bgr'``, as ``cv2.imread`` and
  mmseg's ``LoadImageFromFile`` give them). The data preprocessor's
  channel swap and ``(x - mean) / std`` are *inside* the graph, so that no
  deployment has to copy them from the config (a wrong mean or a missed
  BGR/RGB swap degrades a segmentation silently). With
  ``normalize_in_graph=False`` the input is named ``inputs`` and is the
  normalised batch the segmentor itself takes (``data_preprocessor``'s
  output). Padding (``test_cfg.size_divisor`` of the preprocessor) is not
  in the graph.
* output ``seg_logits``: float32 (N, C, H, W), the class logits at the input
  resolution (``encode_decode``'s), before softmax.
* one output per uncertainty map, named by the final decode head's
  ``uncertainty_names`` (e.g. ``epistemic``, ``aleatoric``): float32
  (N, H, W). Asking onnxruntime for a map by its name needs no channel
  bookkeeping; a plain mmseg model has ``seg_logits`` only.
* ``metadata_props``: ``uncertainty_names``, ``classes`` and ``palette``
  (JSON lists), ``num_classes``, ``input_channel_order``, ``normalization``,
  ``mean`` and ``std`` (JSON, in the network's channel order), ``model_type``,
  the package version and, for a dynamic size, ``min_height`` /
  ``min_width`` (the exporter's lower bounds on H and W).

N, H and W are dynamic by default. The graph is one network and one pass:
segmentors that average many passes (an ensemble's members, MC dropout's
samples; :class:`~mmseg_uncert.models.segmentors.PredictiveSegmentor`) are
refused, distil them into a student first; so are heads whose prediction
draws random numbers (found by running the model once and recording its
sampling calls), whose seeded Monte Carlo maps no ONNX graph reproduces.

The exporter is PyTorch's ``torch.export``-based one (``dynamo=True``,
which needs ``onnxscript``): the TorchScript exporter cannot export the
adaptive average pooling of Fast-SCNN's pyramid pooling with a dynamic
image size ("input size not accessible"). The ``torch.export`` one can, but
PyTorch's decomposition of ``adaptive_avg_pool2d`` branches in Python on
the input size (``in % out == 0``, ...), so the graph silently keeps the
branch of the example size: on Fast-SCNN traced at 64x128 onnxruntime
failed for widths 33..65 (and could give wrong values where the branch
differs but the shapes fit). The export therefore traces adaptive average
pooling as a size-independent linear map (:func:`adaptive_avg_pool2d`), and
digamma (a DirichletHead's maps; ONNX has no such op) as a series
(:func:`digamma`).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import os.path as osp
from typing import Any, Sequence

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from torch import Tensor, nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from ..models.decode_heads.uncertainty_head import split_outputs, uncertainty_names
from ..models.segmentors import (PredictiveSegmentor, final_head, load_config,
                                 mmseg_scope)
from ..version import __version__

#: graph input names: raw 0..255 image (normalisation in the graph), or the
#: segmentor's own normalised input
IMAGE_INPUT = 'image'
NORMALIZED_INPUT = 'inputs'
#: the class-logit output
SEG_LOGITS = 'seg_logits'
CHANNEL_ORDERS = ('bgr', 'rgb')


class UnsupportedModelError(TypeError):
    """A model that is not one network with one forward pass."""


@dataclasses.dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote: the file, the graph's input and output
    names, each output's shape (ints or the names of the dynamic axes), and
    the metadata stored in the graph."""

    path: str
    input_name: str
    output_names: list[str]
    output_shapes: dict[str, list[int | str]]
    metadata: dict[str, str]


class DeployedSegmentor(nn.Module):
    """The exported computation: optional channel swap and normalisation,
    ``segmentor.encode_decode``, then the C + K channels split into
    ``seg_logits`` (N, C, H, W) and K maps (N, H, W); a segmentor with
    ``encode_decode_parts`` (``UncertaintyEncoderDecoder``) gives the two
    apart, so the graph holds no concatenation to cut.

    The network's channel order is ``'rgb'`` when the preprocessor swaps
    channels of the (BGR-loaded) image, else ``'bgr'``; the graph swaps
    when ``input_channel_order`` differs from it.
    """

    def __init__(self, segmentor: nn.Module, normalize_in_graph: bool = True,
                 input_channel_order: str = 'bgr') -> None:
        super().__init__()
        check_exportable(segmentor)
        if input_channel_order not in CHANNEL_ORDERS:
            raise ValueError(f'input_channel_order must be one of {CHANNEL_ORDERS}, '
                             f'got {input_channel_order!r}')
        self.segmentor = segmentor.eval()
        self.uncertainty_names = uncertainty_names(final_head(segmentor))
        self.logit_channels = _output_channels(segmentor) - len(self.uncertainty_names)
        self.normalize_in_graph = normalize_in_graph
        self.input_channel_order = input_channel_order
        self.swap_channels = False
        self.pixel_mean: Tensor | None
        self.pixel_std: Tensor | None
        mean = std = None
        if normalize_in_graph:
            preprocessor = getattr(segmentor, 'data_preprocessor', None)
            if not hasattr(preprocessor, 'channel_conversion'):
                raise TypeError(
                    f'{type(segmentor).__name__}\'s data preprocessor '
                    f'({type(preprocessor).__name__}) is not an mmseg '
                    f'SegDataPreProcessor, so its normalisation cannot be put '
                    f'in the graph; export with normalize_in_graph=False '
                    f'(tools/export_onnx.py --normalized-input) and normalise '
                    f'the images yourself')
            network_order = 'rgb' if preprocessor.channel_conversion else 'bgr'
            self.swap_channels = input_channel_order != network_order
            # SegDataPreProcessor registers mean/std only when it normalises
            if getattr(preprocessor, 'mean', None) is not None:
                mean = preprocessor.mean.detach().float().view(1, -1, 1, 1).clone()
                std = preprocessor.std.detach().float().view(1, -1, 1, 1).clone()
            if getattr(preprocessor, 'test_cfg', None):
                print_log(f'the data preprocessor pads test images '
                          f'({dict(preprocessor.test_cfg)}); the ONNX graph does '
                          f'not: pad its input the same way', logger='current',
                          level=30)
        # names of top-level buffers become graph names: keep them apart
        # from map names such as 'std'
        self.register_buffer('pixel_mean', mean, persistent=False)
        self.register_buffer('pixel_std', std, persistent=False)
        test_mode = (getattr(segmentor, 'test_cfg', None) or {}).get('mode', 'whole')
        if test_mode != 'whole':
            print_log(f'the model\'s test_cfg.mode is {test_mode!r}; the ONNX graph '
                      f'runs whole-image inference (encode_decode) on its input: '
                      f'crop large images yourself for sliding-window inference',
                      logger='current', level=30)

    @property
    def input_name(self) -> str:
        return IMAGE_INPUT if self.normalize_in_graph else NORMALIZED_INPUT

    @property
    def output_names(self) -> list[str]:
        return [SEG_LOGITS, *self.uncertainty_names]

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        x = image
        if self.swap_channels:
            x = x.flip(1)
        if self.pixel_mean is not None:
            x = (x - self.pixel_mean) / self.pixel_std
        # whole-image inference: the decode head resizes to the first image's
        # pad_shape; one meta for the batch keeps the batch size dynamic
        size = tuple(x.shape[2:])
        metas = [dict(img_shape=size, pad_shape=size, ori_shape=size)]
        if self.uncertainty_names and hasattr(self.segmentor, 'encode_decode_parts'):
            logits, maps = self.segmentor.encode_decode_parts(x, metas)
        else:
            out = self.segmentor.encode_decode(x, metas)
            logits, maps = split_outputs(out, self.uncertainty_names)
        return (logits, *maps.unbind(1))


def adaptive_avg_pool2d(x: Tensor, output_size: Sequence[int]) -> Tensor:
    """``F.adaptive_avg_pool2d`` as one formula for every input size.

    Output bin i of an axis of n inputs and o outputs averages inputs
    [floor(i n / o), ceil((i + 1) n / o)) (PyTorch's definition), so pooling
    is y = A_h x A_wᵀ with A[i, j] = 1[s_i <= j < e_i] / (e_i - s_i): no
    branch on n, unlike PyTorch's own decomposition, hence exportable with a
    dynamic image size. (1, 1) is the plain mean.
    """
    oh, ow = (x.shape[-2 + i] if o is None else int(o) for i, o in enumerate(output_size))
    if (oh, ow) == (1, 1):
        return x.mean((-2, -1), keepdim=True)
    a_h = _pooling_matrix(x.shape[-2], oh, x)
    a_w = _pooling_matrix(x.shape[-1], ow, x)
    return torch.matmul(torch.matmul(a_h, x), a_w.transpose(0, 1))


def _pooling_matrix(n: int, o: int, like: Tensor) -> Tensor:
    """(o, n) matrix averaging n inputs into o adaptive bins."""
    i = torch.arange(o, device=like.device)
    start = torch.div(i * n, o, rounding_mode='floor')
    end = torch.div((i + 1) * n + o - 1, o, rounding_mode='floor')
    j = torch.arange(n, device=like.device)
    inside = (j[None] >= start[:, None]) & (j[None] < end[:, None])
    return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)


#: torch functions that draw random numbers
_SAMPLERS = {torch.randn, torch.rand, torch.randint, torch.normal, torch.randn_like,
             torch.rand_like, torch.randint_like, torch.bernoulli, torch.multinomial,
             torch.poisson, torch.randperm, torch.Tensor.normal_, torch.Tensor.uniform_,
             torch.Tensor.bernoulli_, torch.Tensor.random_, torch.Tensor.exponential_,
             torch.Tensor.geometric_, torch.Tensor.cauchy_, torch.Tensor.log_normal_}
#: dropout functions: random when called with training=True
_DROPOUTS = {F.dropout: 2, F.dropout1d: 2, F.dropout2d: 2, F.dropout3d: 2,
             F.alpha_dropout: 2, F.feature_alpha_dropout: 2}


class _RandomCallRecorder(TorchFunctionMode):
    """Records the random-number draws of a forward (samplers, and dropout
    in training mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _SAMPLERS:
            owner = 'Tensor' if 'Tensor' in getattr(func, '__qualname__', '') else 'torch'
            self.calls.append(f'{owner}.{func.__name__}')
        elif func in _DROPOUTS:
            position = _DROPOUTS[func]
            training = (args[position] if len(args) > position
                        else kwargs.get('training', True))
            if training:
                self.calls.append(f'{func.__name__}(training=True)')
        return func(*args, **kwargs)


def _random_calls(graph: nn.Module, example: Tensor) -> list[str]:
    """The distinct random draws of one forward of ``graph``."""
    recorder = _RandomCallRecorder()
    with torch.no_grad(), recorder:
        graph(example)
    return sorted(set(recorder.calls))


def digamma(x: Tensor) -> Tensor:
    """ψ(x) for x > 0 from ONNX's elementary ops (ONNX has no digamma).

    The recurrence ψ(x) = ψ(x + 1) − 1/x, applied six times, gives
    ψ(x) = ψ(y) − Σ_{k=0}^{5} 1/(x + k) with y = x + 6, and for y ≥ 6 the
    asymptotic series ψ(y) = ln y − 1/(2y) − Σ_n B_2n / (2n y^2n)
    = ln y − 1/(2y) − 1/(12y²) + 1/(120y⁴) − 1/(252y⁶) + 1/(240y⁸) − 1/(132y¹⁰)
    (Abramowitz & Stegun 6.3.18) is exact to about 1e-11. NaN where x <= 0,
    where the series does not hold (ψ's arguments in
    :func:`~mmseg_uncert.models.uncertainty.dirichlet_uncertainty` are
    α + 1 > 1), so that a misuse shows instead of giving wrong numbers.
    """
    shift = sum(1.0 / (x + k) for k in range(6))
    y = x + 6.0
    r = 1.0 / (y * y)
    series = r * (1 / 12 - r * (1 / 120 - r * (1 / 252 - r * (1 / 240 - r / 132))))
    value = torch.log(y) - 0.5 / y - series - shift
    return torch.where(x > 0, value, torch.full_like(value, float('nan')))


class _ExportableOps(TorchFunctionMode):
    """While tracing for export: ``F.adaptive_avg_pool2d`` (which
    ``nn.AdaptiveAvgPool2d`` calls) becomes :func:`adaptive_avg_pool2d`, and
    digamma (no ONNX op) :func:`digamma`."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.adaptive_avg_pool2d:
            x = args[0] if args else kwargs['input']
            size = args[1] if len(args) > 1 else kwargs['output_size']
            size = (size, size) if isinstance(size, int) or size is None else size
            return adaptive_avg_pool2d(x, size)
        if func in _DIGAMMAS and not kwargs:
            return digamma(args[0])
        return func(*args, **kwargs)


#: digamma as a function, a special function and a tensor method
_DIGAMMAS = {torch.digamma, torch.special.digamma, torch.Tensor.digamma}


def check_exportable(model: nn.Module) -> None:
    """Raise :class:`UnsupportedModelError` unless ``model`` is one network
    whose ``encode_decode`` is one forward pass (an mmseg EncoderDecoder or
    CascadeEncoderDecoder, with or without uncertainty maps)."""
    if isinstance(model, PredictiveSegmentor):
        raise UnsupportedModelError(_many_passes_message(type(model).__name__))
    if not callable(getattr(model, 'encode_decode', None)) or not hasattr(model, 'decode_head'):
        raise UnsupportedModelError(
            f'{type(model).__name__} has no encode_decode and decode_head: only '
            f'mmseg segmentors (EncoderDecoder, CascadeEncoderDecoder and this '
            f'package\'s UncertaintyEncoderDecoder) can be exported')


def _many_passes_message(kind: str) -> str:
    return (f'{kind} runs many forward passes (one per ensemble member or MC-dropout '
            f'sample) and combines their softmaxes: it is not one network to put in '
            f'an ONNX graph. Distil it into a one-pass student first (e.g. '
            f'configs/distill/'
            f'distill-ensemble-3x_fast-scnn_1xb4-0.5k_synthetic-128x256.py, '
            f'trained with tools/train.py) and export the student\'s config and '
            f'checkpoint')


def _output_channels(segmentor: nn.Module) -> int:
    """Channels of ``encode_decode``'s output: the final head's
    ``out_channels`` (C, 1 for a binary sigmoid head, C + K for an
    uncertainty head)."""
    head = final_head(segmentor)
    channels = getattr(head, 'out_channels', None) or getattr(head, 'num_classes', None)
    if not channels:
        raise UnsupportedModelError(f'{type(head).__name__} has neither out_channels '
                                    f'nor num_classes: its output cannot be split')
    return int(channels)


def check_output_path(out: str) -> str:
    """``out`` as an absolute path, after checking that a file can be written
    there (missing parent folders are created). Raises ``OSError`` naming the
    path and the reason, before any model is built or exported."""
    out = osp.abspath(out)
    if osp.isdir(out):
        raise IsADirectoryError(f'the ONNX output {out} is a folder; give a file name (--out), e.g. '
                                f'{osp.join(out, "model.onnx")}')
    existed = osp.exists(out)
    try:
        os.makedirs(osp.dirname(out), exist_ok=True)
        with open(out, 'ab'):
            pass
    except OSError as error:
        raise type(error)(error.errno, f'cannot write the ONNX file {out} '
                          f'({error.strerror}); choose another output path (--out)') from error
    if not existed:
        os.remove(out)
    return out


def on_cpu(model: nn.Module) -> nn.Module:
    """``model`` itself where it is on the CPU, else a CPU copy: the graph
    is traced, and onnxruntime compared, on the CPU, and the caller's model
    stays where it is (on a GPU, say)."""
    tensors = [*model.parameters(), *model.buffers()]
    if all(t.device.type == 'cpu' for t in tensors):
        return model
    return copy.deepcopy(model).cpu()


def export_onnx(model: nn.Module, out: str, shape: Sequence[int] = (256, 512),
                opset: int | None = None, normalize_in_graph: bool = True,
                input_channel_order: str = 'bgr', dynamic_size: bool = True
                ) -> OnnxExport:
    """Write ``model`` (a deployed segmentor, e.g. from
    :func:`~mmseg_uncert.apis.init_uncertainty_model`) to ``out`` as one
    self-contained ONNX file (weights inside); see the module docstring for
    the graph's inputs, outputs and metadata.

    Args:
        model: the segmentor, in eval mode.
        out: the .onnx file to write.
        shape: (H, W) of the example input the graph is traced with; with
            ``dynamic_size`` other sizes run too.
        opset: ONNX opset; None takes the exporter's recommended one.
        normalize_in_graph: put the preprocessor's channel swap and
            normalisation in the graph (input ``image``, 0..255), else the
            input is the normalised batch (``inputs``).
        input_channel_order: ``'bgr'`` or ``'rgb'``, the order of ``image``.
        dynamic_size: H and W dynamic (the batch size always is).

    Raises:
        UnsupportedModelError: not one network with one deterministic pass.
        OSError: ``out`` cannot be written.
        ValueError: a bad ``shape`` or ``input_channel_order``, map names that
            clash with the graph's names, an ``opset`` the exporter could not
            write.
        RuntimeError: the exporter failed (its error is chained), or wrote
            a graph ONNX's checker refuses.
    """
    out = check_output_path(out)
    model = on_cpu(model)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f'shape must be (H, W) with positive sizes, got {tuple(shape)}')
    graph = DeployedSegmentor(model, normalize_in_graph, input_channel_order).eval()
    clashes = ({graph.input_name, SEG_LOGITS, 'pixel_mean', 'pixel_std'}
               & set(graph.uncertainty_names))
    if clashes:
        raise ValueError(f'uncertainty map names {sorted(clashes)} clash with the '
                         f'graph\'s own input/output names; rename them in the '
                         f'head\'s uncertainty_names')
    from torch.export import Dim
    # batch 2 in the example: torch.export fixes any axis whose example size
    # is 1
    example = _example_input(graph, 2, tuple(shape), seed=0)
    random = _random_calls(graph, example)
    if random:
        raise UnsupportedModelError(
            f'{type(final_head(model)).__name__}\'s prediction draws random numbers '
            f'({", ".join(random)}): its maps are Monte Carlo estimates from PyTorch\'s '
            f'seeded noise, which an ONNX graph cannot reproduce (and torch.export '
            f'cannot size with a dynamic image). Export a student whose maps are '
            f'one deterministic pass (a DualHead, e.g. '
            f'configs/distill/'
            f'distill-ensemble-3x_fast-scnn_1xb4-0.5k_synthetic-128x256.py)')
    axes: dict[int, Any] = {0: Dim('batch', min=1)}
    if dynamic_size:
        axes.update({2: Dim('height', min=1), 3: Dim('width', min=1)})
    try:
        with torch.no_grad(), _ExportableOps():
            program = torch.onnx.export(
                graph, (example, ), f=None, dynamo=True, verbose=False,
                input_names=[graph.input_name], output_names=graph.output_names,
                opset_version=opset, dynamic_shapes=(axes, ))
    except Exception as error:
        raise RuntimeError(
            f'torch.onnx.export failed for {type(model).__name__} with input '
            f'(N, 3, {shape[0]}, {shape[1]}){" and dynamic H, W" if dynamic_size else ""}: '
            f'{type(error).__name__}: {str(error)[:2000]}'
            + ('; try a fixed image size (--static-size)' if dynamic_size else '')
        ) from error
    written_opset = program.model.opset_imports.get('')
    if opset is not None and written_opset != opset:
        # the exporter falls back to its own opset when its version
        # converter fails (it does for 17 and below), and says so only in a log
        raise ValueError(f'opset {opset} was asked for, but the exporter could only '
                         f'write opset {written_opset}: use --opset {written_opset} '
                         f'or higher (or leave it out)')
    metadata = graph_metadata(graph, model)
    metadata.update(_min_sizes(program.exported_program))
    program.model.metadata_props.update(metadata)
    # one file: the weights inside the graph, not in a side file
    program.save(out, external_data=False)
    _check_graph(out)
    shapes = _output_shapes(out)
    print_log(f'wrote {out}: input {graph.input_name} (N, 3, H, W), outputs '
              + ', '.join(f'{n} {tuple(s)}' for n, s in shapes.items()), logger='current')
    return OnnxExport(path=out, input_name=graph.input_name,
                      output_names=graph.output_names, output_shapes=shapes,
                      metadata=metadata)


def graph_metadata(graph: DeployedSegmentor, model: nn.Module) -> dict[str, str]:
    """The ``metadata_props`` written into the graph (all strings)."""
    meta = getattr(model, 'dataset_meta', None) or {}
    props = dict(
        producer='mmseg_uncert', mmseg_uncert_version=__version__,
        model_type=type(model).__name__,
        num_classes=str(graph.logit_channels),
        uncertainty_names=json.dumps(list(graph.uncertainty_names)),
        input_layout='NCHW float32',
        normalization='in_graph' if graph.normalize_in_graph else 'none',
        input_channel_order=graph.input_channel_order if graph.normalize_in_graph
        else 'as the preprocessor outputs')
    if graph.pixel_mean is not None:
        props.update(
            mean=json.dumps([round(v, 6) for v in graph.pixel_mean.flatten().tolist()]),
            std=json.dumps([round(v, 6) for v in graph.pixel_std.flatten().tolist()]))
    if meta.get('classes'):
        props['classes'] = json.dumps(list(meta['classes']))
    if meta.get('palette'):
        props['palette'] = json.dumps([list(map(int, c)) for c in meta['palette']])
    return props


def _min_sizes(program: torch.export.ExportedProgram) -> dict[str, str]:
    """The smallest input height and width the traced graph holds for, from
    the exporter's range constraints (e.g. 33 for Fast-SCNN: below it the
    code the graph was traced through takes other branches)."""
    names = program.graph_signature.user_inputs
    node = next(n for n in program.graph.nodes if n.op == 'placeholder' and n.name in names)
    sizes = {}
    for key, dim in (('min_height', 2), ('min_width', 3)):
        size = node.meta['val'].shape[dim]
        if isinstance(size, torch.SymInt):
            bounds = program.range_constraints.get(size.node.expr)
            sizes[key] = str(int(bounds.lower) if bounds is not None else 1)
    return sizes


def _check_graph(path: str) -> None:
    """ONNX's own model checker on the written file (the exporter can write
    graphs that onnxruntime refuses to load, e.g. with a name defined twice)."""
    import onnx
    try:
        onnx.checker.check_model(path)
    except onnx.checker.ValidationError as error:
        raise RuntimeError(f'the exported graph {path} is not valid ONNX: {error}') from error


def _output_shapes(path: str) -> dict[str, list[int | str]]:
    import onnx
    model = onnx.load(path, load_external_data=False)
    return {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
            for o in model.graph.output}


def _example_input(graph: DeployedSegmentor, batch: int, shape: tuple[int, int],
                   seed: int) -> Tensor:
    """A random input of the graph's kind: 0..255 pixels, or (about)
    normalised values."""
    g = torch.Generator().manual_seed(seed)
    if graph.normalize_in_graph:
        return torch.rand(batch, 3, *shape, generator=g) * 255
    return torch.randn(batch, 3, *shape, generator=g)


def reference_outputs(model: nn.Module, image: Tensor, normalize_in_graph: bool = True,
                      input_channel_order: str = 'bgr') -> dict[str, Tensor]:
    """PyTorch's outputs for ``image`` the way mmseg computes them: the
    model's own data preprocessor (``normalize_in_graph``), then
    ``encode_decode``, split into ``seg_logits`` and the named maps."""
    names = uncertainty_names(final_head(model))
    x = image
    with torch.no_grad():
        if normalize_in_graph:
            if input_channel_order == 'rgb':
                x = x.flip(1)  # the preprocessor expects the loader's BGR
            x = model.data_preprocessor(dict(inputs=list(x)), False)['inputs']
        size = tuple(x.shape[2:])
        out = model.encode_decode(x, [dict(img_shape=size, pad_shape=size,
                                           ori_shape=size)] * x.shape[0])
    logits, maps = split_outputs(out, names)
    return {SEG_LOGITS: logits, **dict(zip(names, maps.unbind(1)))}


def verify_onnx(model: nn.Module, path: str, batch: int = 2,
                shape: Sequence[int] = (256, 512), seed: int = 0,
                threads: int | None = None) -> dict[str, float]:
    """Max absolute difference between onnxruntime's outputs of the graph at
    ``path`` and PyTorch's (:func:`reference_outputs`) for a seeded random
    input of ``batch`` x 3 x H x W, per output name."""
    import onnx
    props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    normalize = props.get('normalization', 'in_graph') == 'in_graph'
    order = props.get('input_channel_order', 'bgr')
    session = onnx_session(path, threads)
    input_name = session.get_inputs()[0].name
    g = torch.Generator().manual_seed(seed)
    image = (torch.rand(batch, 3, *shape, generator=g) * 255 if normalize
             else torch.randn(batch, 3, *shape, generator=g))
    got = dict(zip([o.name for o in session.get_outputs()],
                   session.run(None, {input_name: image.numpy()})))
    expected = reference_outputs(on_cpu(model), image, normalize, order)
    if set(got) != set(expected):
        raise RuntimeError(f'{path} has outputs {sorted(got)}, the model '
                           f'{sorted(expected)}: was it exported from another model?')
    return {name: float((torch.from_numpy(got[name]) - ref).abs().max())
            for name, ref in expected.items()}


def onnx_session(path: str, threads: int | None = None) -> Any:
    """An onnxruntime CPU session for ``path`` (``threads`` intra-op threads;
    None: onnxruntime's default, one per physical core)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def export_onnx_from_config(config: str | Config, checkpoint: str | None, out: str,
                            cfg_options: dict[str, Any] | None = None,
                            **kwargs: Any) -> tuple[nn.Module, OnnxExport]:
    """Build the deployed model of ``config`` with ``checkpoint``
    (:func:`~mmseg_uncert.apis.init_uncertainty_model`; None: random weights),
    ``cfg_options`` merged into the config, and :func:`export_onnx` it to
    ``out``. The checkpoint, the output path and
    the model type are checked before anything is built.

    Returns the model and what was written.
    """
    from mmseg.registry import MODELS
    from .inference import init_uncertainty_model
    if checkpoint is not None and not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint {checkpoint} does not exist; give the '
                                f'.pth file that tools/train.py wrote')
    check_output_path(out)
    cfg = copy.deepcopy(config) if isinstance(config, Config) else load_config(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    with mmseg_scope():
        cls = MODELS.get(cfg.model.get('type', ''))
    if isinstance(cls, type) and issubclass(cls, PredictiveSegmentor):
        raise UnsupportedModelError(_many_passes_message(
            f'{getattr(cfg, "filename", "the config")}\'s model ({cls.__name__})'))
    model = init_uncertainty_model(cfg, checkpoint)
    return model, export_onnx(model, out, **kwargs)
