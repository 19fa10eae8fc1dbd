"""Pack the uncertainty ground truth into the data sample with the label."""
from __future__ import annotations

import numpy as np
from mmcv.transforms import to_tensor
from mmengine.structures import PixelData

from mmseg.datasets.transforms import PackSegInputs
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class PackSegUncertaintyInputs(PackSegInputs):
    """:class:`~mmseg.datasets.transforms.PackSegInputs` plus ``gt_aleatoric``
    and ``gt_ood``, each as a ``PixelData`` of shape (1, H, W) in the data
    sample, where metrics read them (``data_sample.gt_ood.data``)."""

    UNCERTAINTY_KEYS = ('gt_aleatoric', 'gt_ood')

    def transform(self, results: dict) -> dict:
        packed = super().transform(results)
        for key in self.UNCERTAINTY_KEYS:
            if key in results:
                data = to_tensor(np.ascontiguousarray(results[key][None]))
                packed['data_samples'].set_field(PixelData(data=data), key)
        return packed
