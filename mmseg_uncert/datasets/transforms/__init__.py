from .load_uncertainty_annotations import LoadUncertaintyAnnotations
from .pack_seg_uncertainty_inputs import PackSegUncertaintyInputs

__all__ = ['LoadUncertaintyAnnotations', 'PackSegUncertaintyInputs']
