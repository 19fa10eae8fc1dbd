"""mmseg's inference of a segmentor, its slide windows added into their sum in place."""
from __future__ import annotations

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
    if (model.test_cfg.get('mode', 'whole') == 'slide'
            and type(model).inference is EncoderDecoder.inference
            and type(model).slide_inference is EncoderDecoder.slide_inference):
        return slide_inference(model, inputs, batch_img_metas)
    return model.inference(inputs, [dict(meta) for meta in batch_img_metas])


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
    """
    h_stride, w_stride = model.test_cfg.stride
    h_crop, w_crop = model.test_cfg.crop_size
    batch, _, height, width = inputs.shape
    rows = max(height - h_crop + h_stride - 1, 0) // h_stride + 1
    cols = max(width - w_crop + w_stride - 1, 0) // w_stride + 1
    total = inputs.new_zeros((batch, model.out_channels, height, width))
    count = inputs.new_zeros((batch, 1, height, width))
    for row in range(rows):
        for col in range(cols):
            y2 = min(row * h_stride + h_crop, height)
            x2 = min(col * w_stride + w_crop, width)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            window = inputs[:, :, y1:y2, x1:x2]
            # as mmseg: the first image's img_shape becomes the window's, a
            # torch.Size, which is how its heads know a window (they resize
            # their output to it, not to pad_shape); copies, so that the
            # caller's metas stay as they were
            metas = [dict(meta) for meta in batch_img_metas]
            metas[0]['img_shape'] = window.shape[2:]
            logits = model.encode_decode(window, metas)
            total[:, :, y1:y2, x1:x2] += logits
            del logits  # not kept through the next window's forward
            count[:, :, y1:y2, x1:x2] += 1
    return total.div_(count)
