"""The source/target data preprocessor's image mask at feature-map size."""
import torch

from mmseg_uncert.models.data_preprocessors import image_mask


def test_image_mask_scales_to_feature_maps():
    metas = [dict(img_shape=(64, 128)), dict(img_shape=(40, 100))]
    mask = image_mask(metas, (8, 16), torch.device('cpu'), input_size=(64, 128))
    assert mask[0].all()
    assert mask[1].sum().item() == 5 * 13  # ceil(40/8) x ceil(100/8)
