from .image_corruption import CORRUPTION_FAMILIES, CORRUPTIONS, ImageCorruption
from .load_uncertainty_annotations import LoadUncertaintyAnnotations
from .pack_seg_uncertainty_inputs import PackSegUncertaintyInputs
from .paste_noise_patches import PasteNoisePatches

__all__ = ['CORRUPTION_FAMILIES', 'CORRUPTIONS', 'ImageCorruption', 'LoadUncertaintyAnnotations', 'PackSegUncertaintyInputs', 'PasteNoisePatches']
