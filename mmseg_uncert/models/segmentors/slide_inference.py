"""mmseg's inference of a segmentor, its slide windows added into their sum in
place, whole or handed over in row bands as the rows are final."""
from __future__ import annotations

from typing import Iterator

from torch import Tensor, nn

from mmseg.models.segmentors import EncoderDecoder


def model_inference(model: nn.Module, inputs: Tensor, batch_img_metas: list[dict]) -> Tensor:
    """``model.inference(inputs, batch_img_metas)`` of an mmseg segmentor:
    the same logits, whole or slide (``model.test_cfg.mode``); slide by
    :func:`slide_inference`, which needs less memory, where the model runs
    mmseg's own ``inference`` and ``slide_inference`` (a segmentor with its
    own keeps them). ``batch_img_metas`` is left as it was (mmseg's slide
    inference writes the window's shape into it, MaskFormer's head the
    batch's input shape)."""
    if _mmseg_slide(model):
        return slide_inference(model, inputs, batch_img_metas)
    return model.inference(inputs, [dict(meta) for meta in batch_img_metas])


def model_bands(model: nn.Module, inputs: Tensor,
                batch_img_metas: list[dict]) -> Iterator[tuple[int, Tensor]]:
    """The logits of :func:`model_inference` as row bands ``(top, logits of
    rows top..top + h)``, top to bottom: in mmseg's slide mode from
    :func:`slide_bands`, otherwise one band of the whole image."""
    if _mmseg_slide(model):
        yield from slide_bands(model, inputs, batch_img_metas)
    else:
        yield 0, model.inference(inputs, [dict(meta) for meta in batch_img_metas])


def slide_inference(model: nn.Module, inputs: Tensor, batch_img_metas: list[dict]) -> Tensor:
    """mmseg's sliding-window inference (``EncoderDecoder.slide_inference``)
    with less memory, the same logits bit for bit (tested).

    Windows of ``test_cfg.crop_size`` every ``test_cfg.stride``, the last
    row and column moved back to end at the image's edge; each window's
    logits come from ``model.encode_decode`` and are averaged where windows
    overlap. mmseg pads each window's logits to a full-size map before adding
    them, and keeps them through the next window's forward; here they are
    added where the window lies and freed before the next window runs. In a
    streamed ensemble of DeepLabV3+ members in slide mode, that was the
    difference between the first window's peak and the others' (38 MiB: one
    window's logits at 512x1024, 19 classes; ``benchmarks/scale.py``).
    For callers that need the whole map (TTA's rescaled views, ProDA's
    pseudo-labeller); a predictive segmentor folds :func:`slide_bands`.
    """
    batch, _, height, width = inputs.shape
    total = inputs.new_zeros((batch, model.out_channels, height, width))
    count = inputs.new_zeros((batch, 1, height, width))
    for y1, y2 in _spans(model, 0, height):
        for x1, x2 in _spans(model, 1, width):
            logits = _window_logits(model, inputs, batch_img_metas, y1, y2, x1, x2)
            total[:, :, y1:y2, x1:x2] += logits
            del logits  # not kept through the next window's forward
            count[:, :, y1:y2, x1:x2] += 1
    return total.div_(count)


def slide_bands(model: nn.Module, inputs: Tensor,
                batch_img_metas: list[dict]) -> Iterator[tuple[int, Tensor]]:
    """:func:`slide_inference`'s logits, bit for bit (tested), as row bands
    ``(top, logits of rows top..top + h)``, top to bottom: the rows above a
    window row are final once the row before it is done, and are handed over
    then. Only the rows of one window row are summed at a time (half the
    image with Cityscapes' 512x1024 windows on 1024x2048 images), so a
    predictive segmentor that folds the bands into its statistics never holds
    one member's full-size logits (``benchmarks/scale.py``). A consumer
    should drop each band before asking for the next, which runs windows.
    """
    batch, _, height, width = inputs.shape
    top, total, count = 0, None, None  # the sums of rows top..top + len
    for y1, y2 in _spans(model, 0, height):
        if total is not None and y1 > top:
            yield top, total[:, :, :y1 - top] / count[:, :, :y1 - top]
        # this window row's sums, started with what the rows before added
        row_total = inputs.new_zeros((batch, model.out_channels, y2 - y1, width))
        row_count = inputs.new_zeros((batch, 1, y2 - y1, width))
        if total is not None:
            kept = total.shape[2] - (y1 - top)
            row_total[:, :, :kept] = total[:, :, y1 - top:]
            row_count[:, :, :kept] = count[:, :, y1 - top:]
        total, count, top = row_total, row_count, y1
        del row_total, row_count
        for x1, x2 in _spans(model, 1, width):
            logits = _window_logits(model, inputs, batch_img_metas, y1, y2, x1, x2)
            total[:, :, :, x1:x2] += logits
            del logits  # not kept through the next window's forward
            count[:, :, :, x1:x2] += 1
    yield top, total.div_(count)


def _mmseg_slide(model: nn.Module) -> bool:
    """The model runs mmseg's own slide inference."""
    return (model.test_cfg.get('mode', 'whole') == 'slide'
            and type(model).inference is EncoderDecoder.inference
            and type(model).slide_inference is EncoderDecoder.slide_inference)


def _spans(model: nn.Module, dim: int, size: int) -> list[tuple[int, int]]:
    """The windows' [start, end) along ``dim`` (0 rows, 1 columns) of an
    image ``size`` long, as mmseg places them: every ``stride``, the last
    moved back to end at the edge."""
    crop, stride = model.test_cfg.crop_size[dim], model.test_cfg.stride[dim]
    if stride > crop:
        # mmseg would divide the uncovered pixels' zero sums by zero counts
        raise ValueError(
            f'test_cfg.stride {tuple(model.test_cfg.stride)} is larger than '
            f'test_cfg.crop_size {tuple(model.test_cfg.crop_size)}: the pixels '
            f'between the windows would get no logits; use a stride at most '
            f'the crop size')
    count = max(size - crop + stride - 1, 0) // stride + 1
    spans = []
    for index in range(count):
        end = min(index * stride + crop, size)
        spans.append((max(end - crop, 0), end))
    return spans


def _window_logits(model: nn.Module, inputs: Tensor, batch_img_metas: list[dict],
                   y1: int, y2: int, x1: int, x2: int) -> Tensor:
    """``model.encode_decode`` of one window."""
    window = inputs[:, :, y1:y2, x1:x2]
    # as mmseg: the first image's img_shape becomes the window's, a
    # torch.Size, which is how its heads know a window (they resize their
    # output to it, not to pad_shape); copies, so that the caller's metas
    # stay as they were
    metas = [dict(meta) for meta in batch_img_metas]
    metas[0]['img_shape'] = window.shape[2:]
    return model.encode_decode(window, metas)
