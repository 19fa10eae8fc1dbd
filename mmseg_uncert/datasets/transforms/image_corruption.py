"""Corrupt test images at a severity of 1 to 5, as ImageNet-C and
Cityscapes-C do, with the ``imagecorruptions`` package."""
from __future__ import annotations

import functools
import types
import zlib
from typing import Callable

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform

from mmseg.registry import TRANSFORMS

#: Hendrycks & Dietterich's four families of the 15 benchmark corruptions
#: (ImageNet-C, Table 1), and the four held-out ones
CORRUPTION_FAMILIES = {
    'noise': ('gaussian_noise', 'shot_noise', 'impulse_noise'),
    'blur': ('defocus_blur', 'glass_blur', 'motion_blur', 'zoom_blur'),
    'weather': ('snow', 'frost', 'fog', 'brightness'),
    'digital': ('contrast', 'elastic_transform', 'pixelate', 'jpeg_compression'),
    'extra': ('speckle_noise', 'gaussian_blur', 'spatter', 'saturate'),
}
CORRUPTIONS = tuple(name for names in CORRUPTION_FAMILIES.values() for name in names)


@functools.lru_cache(maxsize=None)
def imagecorruptions_corrupt() -> Callable:
    """``imagecorruptions.corrupt``, runnable on numpy 2 and scikit-image
    >= 0.19.

    Its latest release (1.1.2) calls two APIs that are gone: scikit-image's
    ``gaussian(multichannel=True)`` (now ``channel_axis=-1``; gaussian_blur,
    glass_blur) and ``np.float_`` (now ``np.float64``; fog). Both are given
    back inside that one module only (its ``gaussian`` and ``np`` names), so
    nothing else in the process changes. Its impulse noise calls
    scikit-image's ``random_noise`` without a generator, which then draws
    fresh OS entropy; inside the module it gets one seeded from numpy's
    global generator, as the package's other corruptions draw from, so that
    :class:`ImageCorruption`'s seed covers it too. The corruptions
    themselves are the package's.
    """
    try:
        import imagecorruptions
        from imagecorruptions import corruptions as module
    except ImportError as error:
        raise ImportError(
            f'ImageCorruption needs the imagecorruptions package ({error}); install '
            f'it with: pip install "imagecorruptions>=1.1.2" (it imports '
            f'pkg_resources: setuptools < 81)') from error
    original_gaussian = module.gaussian
    if not getattr(original_gaussian, '_channel_axis_shim', False):
        def gaussian(image, *args, multichannel=None, **kwargs):
            if multichannel is not None:
                kwargs.setdefault('channel_axis', -1 if multichannel else None)
            return original_gaussian(image, *args, **kwargs)
        gaussian._channel_axis_shim = True
        module.gaussian = gaussian
    if not hasattr(module.np, 'float_'):
        numpy_with_float_ = types.ModuleType('numpy')
        numpy_with_float_.__dict__.update(np.__dict__)
        numpy_with_float_.float_ = np.float64
        module.np = numpy_with_float_
    if not getattr(module.sk.util.random_noise, '_seeded_shim', False):
        original_noise = module.sk.util.random_noise

        def random_noise(image, *args, rng=None, **kwargs):
            if rng is None:
                rng = np.random.randint(2**31)
            return original_noise(image, *args, rng=rng, **kwargs)
        random_noise._seeded_shim = True
        util = types.ModuleType('skimage.util')
        util.__dict__.update(module.sk.util.__dict__)
        util.random_noise = random_noise
        skimage = types.ModuleType('skimage')
        skimage.__dict__.update(module.sk.__dict__)
        skimage.util = util
        module.sk = skimage
    return imagecorruptions.corrupt


@TRANSFORMS.register_module()
class ImageCorruption(BaseTransform):
    """Corrupt ``img`` by one of the 19 corruptions of Hendrycks & Dietterich
    ("Benchmarking Neural Network Robustness to Common Corruptions and
    Perturbations", ICLR 2019) at ``severity`` 1–5, as Cityscapes-C
    (Michaelis et al., 2019) does for segmentation, through the
    ``imagecorruptions`` package.

    Place it after ``LoadImageFromFile`` in a test pipeline, before any
    resize (the corruptions' parameters are set for the image as stored).
    Labels are not touched: the corruptions move no pixel except
    ``elastic_transform``, which moves them by a few pixels, as in the
    benchmarks. The image is corrupted as RGB (frost, fog and saturate
    depend on the colour order) and handed back in mmseg's BGR.

    The random parts (noise, frost crops, snow, spatter) are drawn from a
    generator seeded by ``seed`` and the image's path, so every run corrupts
    every image the same way, whatever the order or the number of workers;
    numpy's global random state is left as it was.

    Args:
        corruption: one of :data:`CORRUPTIONS`.
        severity: 1 (mild) to 5 (severe).
        seed: the seed mixed with each image's path.
    """

    def __init__(self, corruption: str, severity: int, seed: int = 0) -> None:
        if corruption not in CORRUPTIONS:
            raise ValueError(f'ImageCorruption: unknown corruption {corruption!r}; '
                             f'available: {", ".join(CORRUPTIONS)}')
        if severity not in (1, 2, 3, 4, 5):
            raise ValueError(f'ImageCorruption: severity must be 1, 2, 3, 4 or 5, got '
                             f'{severity!r}')
        self.corruption, self.severity, self.seed = corruption, severity, seed
        self.corrupt = imagecorruptions_corrupt()

    def transform(self, results: dict) -> dict:
        img = results['img']
        path = str(results.get('img_path', ''))
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f'ImageCorruption: {path} must be an 8-bit 3-channel image '
                             f'(got {img.dtype}, shape {img.shape})')
        if min(img.shape[:2]) < 32:
            raise ValueError(f'ImageCorruption: {path} is {img.shape[1]}x{img.shape[0]}; '
                             f'the corruptions need at least 32x32 pixels')
        state = np.random.get_state()
        # the package draws from numpy's global generator: seeded per image
        # here, then put back
        np.random.seed((self.seed * 1_000_003 + zlib.crc32(path.encode())) % 2**32)
        try:
            rgb = self.corrupt(mmcv.bgr2rgb(img), severity=self.severity,
                               corruption_name=self.corruption)
        finally:
            np.random.set_state(state)
        if rgb.shape[:2] != img.shape[:2]:
            raise RuntimeError(f'ImageCorruption: {self.corruption} changed the size of '
                               f'{path} from {img.shape[:2]} to {rgb.shape[:2]}')
        results['img'] = mmcv.rgb2bgr(rgb)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(corruption={self.corruption!r}, '
                f'severity={self.severity}, seed={self.seed})')
