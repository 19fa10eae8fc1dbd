"""Where an mmseg decode head's per-pixel features and class scores are.

A :class:`~.dual_head.DualHead` (and distillation's feature terms) must read
the features from which a head's prediction is made, for any head, without
changing what the head computes. Heads differ in where those are, not in
their type names, so a tap is chosen by what the head *has* and *does*
(:func:`tap_head`):

* :class:`ClassifierTap`: the head classifies a dense feature map with a 1x1
  ``conv_seg`` convolution (every ``BaseDecodeHead`` that calls ``cls_seg``:
  FCN, PSP, ASPP, UPer, SegFormer, DA, OCR, DDR, PID, SETR, DPT, ...). The
  features are its input, the class scores its output, and the head's
  forward must return that output (alone, or among auxiliary outputs).
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

Hooks are module-level functions writing to the module they are on, so a
deep copy of a tapped head (an EMA model) keeps working taps.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn


class UnsupportedHeadError(TypeError):
    """A decode head whose prediction no tap can follow."""


def _keep_input(module: nn.Module, args: tuple) -> None:
    module.tapped_input = args[0]


def _keep_output(module: nn.Module, args: tuple, output: Any) -> None:
    module.tapped_output = output
    module.tapped_calls = module.__dict__.get('tapped_calls', 0) + 1


def _pop(module: nn.Module, name: str) -> Any:
    return module.__dict__.pop(name, None)


def _clear(*modules: nn.Module) -> None:
    for module in modules:
        for name in ('tapped_input', 'tapped_output', 'tapped_calls'):
            module.__dict__.pop(name, None)


class HeadTap:
    """Base of the taps: after one forward of the head (``forward``, ``loss``
    or ``predict``), :meth:`take` gives the per-pixel features (B, F, h, w)
    and the dense class scores (B, C, h, w) that the prediction is made of,
    at the features' resolution. ``feature_channels`` is F."""

    feature_channels: int

    def __init__(self, head: nn.Module) -> None:
        self.head_name = type(head).__name__

    def clear(self) -> None:
        """Forget what an earlier forward left (call before each forward)."""

    def take(self, inputs: Sequence[Tensor] | None = None,
             image_size: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
        """(features, scores) of the latest forward, once. ``inputs`` (the
        head's inputs) or ``image_size`` place token heads' outputs on their
        grid; other heads ignore them."""
        raise NotImplementedError

    def _missing(self, what: str) -> RuntimeError:
        return RuntimeError(f'{self.head_name}: {what} was not called in the '
                            f'forward just run, so its features cannot be read')


class ClassifierTap(HeadTap):
    """A head that ends in one 1x1 ``conv_seg`` classifier (see module doc)."""

    @staticmethod
    def fits(head: nn.Module) -> bool:
        return isinstance(getattr(head, 'conv_seg', None), nn.Conv2d)

    def __init__(self, head: nn.Module) -> None:
        super().__init__(head)
        self.classifier = head.conv_seg
        self.classifier.register_forward_pre_hook(_keep_input)
        self.classifier.register_forward_hook(_keep_output)
        self.feature_channels = self.classifier.in_channels

    def clear(self) -> None:
        _clear(self.classifier)

    def take(self, inputs: Sequence[Tensor] | None = None,
             image_size: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
        calls = _pop(self.classifier, 'tapped_calls')
        feature = _pop(self.classifier, 'tapped_input')
        scores = _pop(self.classifier, 'tapped_output')
        if feature is None:
            raise UnsupportedHeadError(
                f'{self.head_name} did not call its classifier conv_seg in forward: '
                f'its prediction is made some other way, which DualHead cannot follow')
        if calls > 1:
            raise UnsupportedHeadError(
                f'{self.head_name} called its classifier conv_seg {calls} times in '
                f'one forward; DualHead cannot tell which call is the prediction')
        return feature, scores

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
        self.classifier.register_forward_pre_hook(_keep_input)
        self.last_stage.register_forward_hook(_keep_output)
        self.feature_channels = self.classifier.in_channels

    def clear(self) -> None:
        _clear(self.classifier, self.last_stage)

    def take(self, inputs: Sequence[Tensor] | None = None,
             image_size: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
        feature = _pop(self.classifier, 'tapped_input')
        output = _pop(self.last_stage, 'tapped_output')
        _clear(self.classifier, self.last_stage)
        if feature is None or output is None:
            raise self._missing('the kernel-generating classifier or the last '
                                'kernel-update stage')
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
        self.embedding.register_forward_hook(_keep_output)
        head.register_forward_hook(_keep_output)
        self.feature_channels = self.embedding.out_channels

    def clear(self) -> None:
        _clear(self.embedding, self.head[0])

    def take(self, inputs: Sequence[Tensor] | None = None,
             image_size: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
        feature = _pop(self.embedding, 'tapped_output')
        output = _pop(self.head[0], 'tapped_output')
        _clear(self.embedding, self.head[0])
        if feature is None or output is None:
            raise self._missing('the pixel decoder or the head itself')
        cls_scores, mask_preds = output
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
        self.patches.register_forward_hook(_keep_output)
        self.masks.register_forward_hook(_keep_output)
        self.feature_channels = self.patches.out_features

    def clear(self) -> None:
        _clear(self.patches, self.masks)

    def take(self, inputs: Sequence[Tensor] | None = None,
             image_size: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
        patches = _pop(self.patches, 'tapped_output')
        masks = _pop(self.masks, 'tapped_output')
        _clear(self.patches, self.masks)
        if patches is None or masks is None:
            raise self._missing('patch_proj or mask_norm')
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
            return tap(head)
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
