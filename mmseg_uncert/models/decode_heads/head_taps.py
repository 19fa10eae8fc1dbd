"""Where an mmseg decode head's per-pixel features and class scores are.

A :class:`~.dual_head.DualHead`, a :class:`~.heteroscedastic_head.HeteroscedasticHead`,
ProDA's prototypes and distillation's feature terms must read the features
from which a head's prediction is made, for any head, without changing what
the head computes. Heads differ in where those are, not in their type names,
so a tap is chosen by what the head *has* and *does* (:func:`tap_head`):

* :class:`ClassifierTap`: the head classifies a dense feature map with a 1x1
  ``conv_seg`` convolution (every ``BaseDecodeHead`` that calls ``cls_seg``:
  FCN, PSP, ASPP, UPer, SegFormer, DA, OCR, DDR, PID, SETR, DPT, ...). The
  features are its input (or its ``dropout`` layer's input, ``before_dropout``),
  the class scores its output, and the head's forward must return that output
  (alone, or among auxiliary outputs).
* :class:`IterativeKernelTap`: K-Net's iterative head. A kernel-generating
  head gives the features and the first masks; each kernel-update stage
  refines the masks from the same features; the last stage is the prediction.
* :class:`MaskQueryTap`: MaskFormer / Mask2Former. A pixel decoder gives the
  per-pixel mask embeddings (its ``mask_feature`` layer); queries give class
  scores and masks; the semantic scores are
  s_c(x) = Σ_q softmax(cls_q)_c · sigmoid(mask_q(x)) (Cheng et al.,
  "Per-Pixel Classification is Not All You Need", NeurIPS 2021), read as
  logits log s_c.
* :class:`PatchClassTap`: Segmenter's mask transformer. Patch embeddings and
  class embeddings are projected and their (normalised) dot products are the
  class scores (Strudel et al., ICCV 2021); the features are the projected
  patch embeddings, laid out on the patch grid.

A head none of them fits (PointRend's point head, which re-classifies a few
sampled points with an MLP; heads without class scores) is refused with
:class:`UnsupportedHeadError`, naming the head and the reason.

A tap is a context manager, as mmrazor's recorders are used: entering it
hooks the head's parts, the forward run inside records what they see, and
:meth:`HeadTap.take` hands it over; leaving removes the hooks and forgets the
records. Nothing stays on the modules between forwards, so a deep copy of a
head (an EMA model) copies no tap, and a call of the head outside a tap
records nothing::

    with tap:
        output = head(inputs)
        feature, scores = tap.take(inputs)
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn


class UnsupportedHeadError(TypeError):
    """A decode head whose prediction no tap can follow."""


class HeadTap:
    """Base of the taps: inside ``with tap:``, after one forward of the head
    (``forward``, ``loss`` or ``predict``), :meth:`take` gives the per-pixel
    features (B, F, h, w) and the dense class scores (B, C, h, w) that the
    prediction is made of, at the features' resolution. ``feature_channels``
    is F. Subclasses name what to record with :meth:`_watch`."""

    feature_channels: int

    def __init__(self, head: nn.Module) -> None:
        self.head_name = type(head).__name__
        self._watched: list[tuple[str, nn.Module, str]] = []
        self._records: dict[str, list[Any]] = {}
        self._handles: list[Any] = []

    def _watch(self, name: str, module: nn.Module, what: str) -> None:
        """Record ``module``'s ``what`` (``'input'`` or ``'output'``) under
        ``name`` inside the ``with`` block."""
        self._watched.append((name, module, what))

    def __enter__(self) -> 'HeadTap':
        if self._handles:
            raise RuntimeError(f'the {self.head_name} tap is already entered')
        for name, module, what in self._watched:
            record = self._records.setdefault(name, [])
            if what == 'input':
                handle = module.register_forward_pre_hook(
                    lambda _, args, record=record: record.append(args[0]))
            else:
                handle = module.register_forward_hook(
                    lambda _, args, out, record=record: record.append(out))
            self._handles.append(handle)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._records = {}

    def _pop(self, name: str) -> list[Any]:
        """What ``name`` recorded since the last take, forgotten here (an
        MC-dropout teacher's next pass records afresh)."""
        if not self._handles:
            raise RuntimeError(f'the {self.head_name} tap is read outside its '
                               f'"with" block')
        recorded, self._records[name][:] = list(self._records[name]), []
        return recorded

    def _last(self, *names: str) -> list[Any]:
        """The latest record of each name; an error naming a part that did
        not run."""
        values = [self._pop(name) for name in names]
        missing = [name for name, value in zip(names, values) if not value]
        if missing:
            raise RuntimeError(f'{self.head_name}: {" and ".join(missing)} did not '
                               f'run in the forward just run, so its features cannot '
                               f'be read')
        return [value[-1] for value in values]

    def take(self, inputs: Sequence[Tensor] | None = None,
             image_size: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
        """(features, scores) of the latest forward, once. ``inputs`` (the
        head's inputs) or ``image_size`` place token heads' outputs on their
        grid; other heads ignore them."""
        raise NotImplementedError


class ClassifierTap(HeadTap):
    """A head that ends in one 1x1 ``conv_seg`` classifier (see module doc).

    ``before_dropout`` reads the features before the head's ``dropout`` layer
    (when it has one): models that compare features across train and eval
    mode (ProDA's prototypes: a momentum copy in eval against the model in
    training) need them without dropout's zeros and 1/(1 − p) scaling."""

    @staticmethod
    def fits(head: nn.Module) -> bool:
        return isinstance(getattr(head, 'conv_seg', None), nn.Conv2d)

    def __init__(self, head: nn.Module, wrapper: str = 'this model',
                 before_dropout: bool = False) -> None:
        if not self.fits(head):
            raise UnsupportedHeadError(
                f'{wrapper} needs a decode head whose classifier is a conv_seg '
                f'Conv2d (mmseg BaseDecodeHead subclasses); {type(head).__name__} '
                f'has none')
        super().__init__(head)
        self.classifier = head.conv_seg
        dropout = getattr(head, 'dropout', None)
        self.feature_source = (dropout if before_dropout and isinstance(dropout, nn.Module)
                               else self.classifier)
        self.feature_channels = self.classifier.in_channels
        self._watch('feature', self.feature_source, 'input')
        self._watch('scores', self.classifier, 'output')

    def take(self, inputs: Sequence[Tensor] | None = None,
             image_size: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
        features, scores = self._pop('feature'), self._pop('scores')
        if not scores:
            raise UnsupportedHeadError(
                f'{self.head_name} did not call its classifier conv_seg in forward: '
                f'its prediction is made some other way, which cannot be followed')
        if len(scores) > 1:
            raise UnsupportedHeadError(
                f'{self.head_name} called its classifier conv_seg {len(scores)} times '
                f'in one forward; which call is the prediction cannot be told')
        return features[-1], scores[-1]

    def check_output(self, output: Any, scores: Tensor) -> None:
        """The head's forward must return the classifier's output, alone or
        among auxiliary outputs (DAHead, DDRHead, PIDHead, EncHead)."""
        outputs = output if isinstance(output, (tuple, list)) else [output]
        if not any(o is scores for o in outputs):
            raise UnsupportedHeadError(
                f'{self.head_name} returned {_describe(output)}, none of which is '
                f'its classifier conv_seg\'s output; DualHead cannot tell which '
                f'output is the prediction')


class IterativeKernelTap(HeadTap):
    """K-Net's iterative head (``kernel_generate_head`` + ``kernel_update_head``
    stages): features are what the kernel-generating head classifies, scores
    the last stage's masks."""

    @staticmethod
    def fits(head: nn.Module) -> bool:
        return (ClassifierTap.fits(getattr(head, 'kernel_generate_head', None))
                and isinstance(getattr(head, 'kernel_update_head', None), nn.ModuleList)
                and len(head.kernel_update_head) > 0)

    def __init__(self, head: nn.Module) -> None:
        super().__init__(head)
        self.classifier = head.kernel_generate_head.conv_seg
        self.last_stage = head.kernel_update_head[-1]
        self.feature_channels = self.classifier.in_channels
        self._watch('the kernel-generating classifier', self.classifier, 'input')
        self._watch('the last kernel-update stage', self.last_stage, 'output')

    def take(self, inputs: Sequence[Tensor] | None = None,
             image_size: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
        feature, output = self._last('the kernel-generating classifier',
                                     'the last kernel-update stage')
        return feature, output[0]  # a stage returns (masks, kernels)


class MaskQueryTap(HeadTap):
    """MaskFormer / Mask2Former heads (a ``pixel_decoder`` with a
    ``mask_feature`` layer; forward returns per-layer class scores and
    masks): features are the mask embeddings, scores the semantic inference
    of the last decoder layer."""

    @staticmethod
    def fits(head: nn.Module) -> bool:
        decoder = getattr(head, 'pixel_decoder', None)
        return isinstance(getattr(decoder, 'mask_feature', None), nn.Conv2d)

    def __init__(self, head: nn.Module) -> None:
        super().__init__(head)
        self.embedding = head.pixel_decoder.mask_feature
        self.head = [head]  # a list: not registered as a submodule twice
        self.feature_channels = self.embedding.out_channels
        self._watch('the pixel decoder', self.embedding, 'output')
        self._watch('the head itself', head, 'output')

    def take(self, inputs: Sequence[Tensor] | None = None,
             image_size: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
        feature, (cls_scores, mask_preds) = self._last('the pixel decoder',
                                                       'the head itself')
        # as logits: log s, so that softmax gives s / Σ_c s_c
        scores = semantic_scores(cls_scores[-1], mask_preds[-1])
        return feature, scores.clamp_min(torch.finfo(scores.dtype).tiny).log()


def semantic_scores(cls_score: Tensor, mask_pred: Tensor) -> Tensor:
    """s_c = Σ_q softmax(cls_q)_c · sigmoid(mask_q), the "no object" class
    dropped: MaskFormer's semantic inference, (B, C, h, w)."""
    return torch.einsum('bqc,bqhw->bchw', cls_score.softmax(-1)[..., :-1],
                        mask_pred.sigmoid())


class PatchClassTap(HeadTap):
    """Segmenter's mask transformer (``patch_proj``, ``classes_proj`` and
    ``mask_norm`` over tokens): features are the projected patch tokens,
    scores the normalised masks, both laid out on the patch grid."""

    @staticmethod
    def fits(head: nn.Module) -> bool:
        return all(isinstance(getattr(head, name, None), nn.Module)
                   for name in ('patch_proj', 'classes_proj', 'mask_norm'))

    def __init__(self, head: nn.Module) -> None:
        super().__init__(head)
        self.head = [head]
        self.patches = head.patch_proj
        self.masks = head.mask_norm
        self.feature_channels = self.patches.out_features
        self._watch('patch_proj', self.patches, 'output')
        self._watch('mask_norm', self.masks, 'output')

    def take(self, inputs: Sequence[Tensor] | None = None,
             image_size: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
        patches, masks = self._last('patch_proj', 'mask_norm')
        h, w = self._grid(patches.shape[1], inputs, image_size)
        return (patches.transpose(1, 2).reshape(patches.shape[0], -1, h, w),
                masks.transpose(1, 2).reshape(masks.shape[0], -1, h, w))

    def _grid(self, tokens: int, inputs: Sequence[Tensor] | None,
              image_size: Sequence[int] | None) -> tuple[int, int]:
        """The token grid (h, w): the head's input's when given; else the one
        with h·w = tokens and the image's aspect ratio (a teacher's tokens,
        whose backbone features are not at hand)."""
        if inputs is not None:
            return tuple(self.head[0]._transform_inputs(inputs).shape[2:])
        if image_size is None:
            raise ValueError(f'{self.head_name}: the token grid needs the head\'s '
                             f'inputs or the image size')
        height, width = image_size
        h = max(1, round((tokens * height / width) ** 0.5))
        if tokens % h:
            raise ValueError(f'{self.head_name}: {tokens} tokens do not lie on a grid '
                             f'of the image\'s aspect ratio {height}x{width}')
        return h, tokens // h


#: tried in this order; the first that fits the head is used
TAPS = (IterativeKernelTap, MaskQueryTap, PatchClassTap, ClassifierTap)


def tap_head(head: nn.Module, wrapper: str) -> HeadTap:
    """The tap for ``head`` (see the module docstring), or
    :class:`UnsupportedHeadError` naming the head and why it is refused."""
    name = type(head).__name__
    classifiers = (getattr(head, 'conv_seg', None), getattr(head, 'fc_seg', None))
    if any(isinstance(c, nn.Conv1d) for c in classifiers):
        raise UnsupportedHeadError(
            f'{wrapper} cannot follow {name}: it classifies sampled points with a '
            f'Conv1d over point features (PointRend), and its prediction is the '
            f'previous stage\'s map with only those points re-classified, so no '
            f'per-pixel feature map gives its scores')
    for tap in TAPS:
        if tap.fits(head):
            return tap(head, wrapper) if tap is ClassifierTap else tap(head)
    if getattr(head, 'num_classes', None) == 1 and not hasattr(head, 'conv_seg'):
        raise UnsupportedHeadError(f'{wrapper} cannot follow {name}: it predicts one '
                                   f'value per pixel (depth), not class scores')
    raise UnsupportedHeadError(
        f'{wrapper} cannot follow {name}: it has no conv_seg Conv2d classifier, '
        f'kernel-update stages, pixel decoder with mask queries or patch/class '
        f'projections, so the features its prediction is made of cannot be found')


def _describe(output: Any) -> str:
    if isinstance(output, Tensor):
        return f'a tensor of shape {tuple(output.shape)}'
    if isinstance(output, (tuple, list)):
        return f'a {type(output).__name__} of ' + ', '.join(
            f'{type(o).__name__}{tuple(o.shape) if isinstance(o, Tensor) else ""}'
            for o in output)
    return type(output).__name__
