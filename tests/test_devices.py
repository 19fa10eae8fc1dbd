"""Precision without a GPU: every segmentor in float64 and under CPU autocast.

Every segmentor trains and predicts after ``.to(torch.float64)`` and under
CPU autocast, where the losses that need float32 get it
(mmseg_uncert.models.precision).
"""
import pytest
import torch

from helpers.device_checks import (INFERENCE_ONLY, SEGMENTORS, batch, build_segmentor,
                                   registered_segmentors, run_steps)

CPU = torch.device('cpu')


def test_every_registered_segmentor_is_checked():
    assert registered_segmentors() == set(SEGMENTORS)


@pytest.mark.parametrize('name', SEGMENTORS)
def test_float64_training_and_test_steps(name, tmp_path):
    """After .to(float64) every parameter and buffer is float64, frozen
    models' included, the losses are float64 and the predictions follow."""
    out = run_steps(name, str(tmp_path), CPU, dtype=torch.float64)
    assert out['samples'][0].seg_logits.data.dtype == torch.float64
    if name not in INFERENCE_ONLY:
        assert out['losses']['loss'].dtype == torch.float64


@pytest.mark.parametrize('name', [n for n in SEGMENTORS if n not in INFERENCE_ONLY])
def test_mixed_precision_steps_keep_losses_in_float32(name, tmp_path):
    """Under CPU autocast (bfloat16) the losses that need float32 get it and
    stay finite, near the float32 step's (the network itself runs in
    bfloat16, about 3 significant digits); the weights stay float32."""
    amp = run_steps(name, str(tmp_path), CPU, amp_dtype=torch.bfloat16)
    full = run_steps(name, str(tmp_path), CPU)
    assert amp['losses']['loss'].dtype == torch.float32
    for key, value in full['losses'].items():
        if 'loss' in key:
            assert amp['losses'][key].item() == pytest.approx(
                value.item(), rel=0.1, abs=1e-2), key


def test_float64_loss_equals_float32_loss(tmp_path):
    """The same distillation step in float64 and float32 agrees: nothing is
    computed at a precision other than the model's."""
    values = {}
    for dtype in (torch.float32, torch.float64):
        model = build_segmentor('EnsembleDistiller', str(tmp_path)).to(dtype=dtype)
        model.train()
        data = model.data_preprocessor(batch(3), True)
        torch.manual_seed(0)
        values[dtype] = {k: v.item() for k, v in model(**data, mode='loss').items()
                         if 'loss' in k}
    for key, value in values[torch.float64].items():
        assert values[torch.float32][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
