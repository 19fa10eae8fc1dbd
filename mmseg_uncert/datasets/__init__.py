from .samplers import BootstrapSampler
from .source_target_dataset import SourceTargetDataset
from .synthetic_streets import SceneSpec, generate, make_sample, render_scene
from .synthetic_streets_dataset import SyntheticStreetsDataset
from .transforms import LoadUncertaintyAnnotations, PackSegUncertaintyInputs

__all__ = [
    'BootstrapSampler', 'SourceTargetDataset', 'SceneSpec', 'generate', 'make_sample', 'render_scene',
    'SyntheticStreetsDataset', 'LoadUncertaintyAnnotations',
    'PackSegUncertaintyInputs'
]
