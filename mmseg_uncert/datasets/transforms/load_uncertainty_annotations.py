"""Load the per-pixel uncertainty ground truth into the results dict."""
from __future__ import annotations

import io

import mmcv
import numpy as np
from PIL import Image
from mmcv.transforms import BaseTransform
from mmengine import fileio

from mmseg.registry import TRANSFORMS

from ..annotation_noise import decode_entropy


def _is_palette_png(content: bytes) -> bool:
    """Whether the bytes are a PNG of colour type 3 (palette): byte 25 of
    the IHDR chunk, which follows the 8-byte signature."""
    return content[:8] == b'\x89PNG\r\n\x1a\n' and len(content) > 25 and content[25] == 3


@TRANSFORMS.register_module()
class LoadUncertaintyAnnotations(BaseTransform):
    """Load ``gt_aleatoric`` and ``gt_ood`` from ``aleatoric_path``/``ood_path``.

    * ``gt_aleatoric``: float32 (H, W), the true label entropy in nats
      (stored as a uint16 PNG of ``round(10000 x nats)``).
    * ``gt_ood``: uint8 (H, W), 1 where the object never occurs in training,
      0 elsewhere (any nonzero mask value is OOD). A palette (P mode) PNG is
      read as its palette indices, as PIL and the benchmarks read it. A data
      set whose masks code more than that (an anomaly benchmark's void pixels, or a semantic label
      with an anomaly class) gives each sample an ``ood_label_map``
      {mask value: gt_ood value}; values it does not list become
      ``OOD_VOID`` (255, not evaluated by
      :class:`~mmseg_uncert.evaluation.AnomalyMetric`).

    Both are added to ``seg_fields``, so mmseg's geometric transforms
    (resize, crop, flip) treat them like the label map. Place it after
    ``LoadAnnotations``; pack with ``PackSegUncertaintyInputs``.

    An image without any annotation (no ``seg_map_path``, no label: what
    ``mmseg.apis.inference_model`` and ``MMSegInferencer`` give the test
    pipeline) passes through unchanged, so one test pipeline serves
    evaluation and inference. A labelled image without the uncertainty
    files the transform is asked for is an error: its metrics would
    otherwise be computed without them.

    Args:
        keys: which of ``('aleatoric', 'ood')`` to load.
        backend_args: file backend arguments, as mmseg's loaders take.
    """

    KEYS = ('aleatoric', 'ood')
    #: the gt_ood value of pixels an ``ood_label_map`` does not list
    OOD_VOID = 255

    def __init__(self, keys: tuple[str, ...] = KEYS,
                 backend_args: dict | None = None) -> None:
        unknown = set(keys) - set(self.KEYS)
        if unknown:
            raise ValueError(f'LoadUncertaintyAnnotations: unknown keys '
                             f'{sorted(unknown)}; choose from {self.KEYS}')
        self.keys = tuple(keys)
        self.backend_args = backend_args

    def _read(self, path: str, key: str, img_path: str,
              ood_label_map: dict[int, int] | None = None) -> np.ndarray:
        content = fileio.get(path, backend_args=self.backend_args)
        arr = mmcv.imfrombytes(content, flag='unchanged', backend='cv2')
        if arr is not None and arr.ndim == 3 and _is_palette_png(content):
            # cv2 expands a palette PNG to its colours; the mask is its
            # indices, as PIL and the benchmarks' own code read it
            arr = np.asarray(Image.open(io.BytesIO(content)))
        if arr is None or arr.ndim != 2:
            raise ValueError(f'{path}: the {key} mask of image {img_path} is not '
                             f'a single-channel PNG')
        if key == 'aleatoric':
            if arr.dtype != np.uint16:
                raise ValueError(f'{path}: the aleatoric map must be a 16-bit '
                                 f'PNG (round(10000 x entropy in nats)), got '
                                 f'{arr.dtype}')
            return decode_entropy(arr)
        if ood_label_map is None:
            return (arr > 0).astype(np.uint8)
        ood = np.full(arr.shape, self.OOD_VOID, dtype=np.uint8)
        for value, target in ood_label_map.items():
            ood[arr == value] = target
        return ood

    def transform(self, results: dict) -> dict:
        img_path = results.get('img_path', '<unknown image>')
        labelled = (results.get('seg_map_path') is not None
                    or results.get('gt_seg_map') is not None)
        for key in self.keys:
            path = results.get(f'{key}_path')
            if path is None and not labelled:
                continue  # inference on an image without annotations
            if path is None:
                raise KeyError(
                    f'image {img_path} has a label but no {key}_path: use a '
                    f"dataset that provides it (type='SyntheticStreetsDataset') "
                    f'or remove LoadUncertaintyAnnotations from the pipeline')
            arr = self._read(path, key, img_path,
                             results.get('ood_label_map') if key == 'ood' else None)
            label = results.get('gt_seg_map')
            if label is not None and label.shape != arr.shape:
                raise ValueError(
                    f'{path}: the {key} mask has shape {arr.shape}, the label '
                    f'of image {img_path} has {label.shape}; load both before '
                    f'any resize')
            results[f'gt_{key}'] = arr
            results.setdefault('seg_fields', []).append(f'gt_{key}')
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(keys={self.keys})'
