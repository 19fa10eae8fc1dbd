from .fishyscapes_lost_and_found_dataset import FishyscapesLostAndFoundDataset
from .samplers import BootstrapSampler
from .segment_me_if_you_can_dataset import SegmentMeIfYouCanDataset
from .source_target_dataset import SourceTargetDataset
from .street_hazards_dataset import StreetHazardsDataset
from .synthetic_streets import SceneSpec, generate, make_sample, render_scene
from .synthetic_streets_dataset import SyntheticStreetsDataset
from .transforms import LoadUncertaintyAnnotations, PackSegUncertaintyInputs

__all__ = [
    'BootstrapSampler', 'SourceTargetDataset', 'SceneSpec', 'generate', 'make_sample', 'render_scene',
    'SyntheticStreetsDataset', 'LoadUncertaintyAnnotations',
    'PackSegUncertaintyInputs', 'SegmentMeIfYouCanDataset',
    'FishyscapesLostAndFoundDataset', 'StreetHazardsDataset'
]
