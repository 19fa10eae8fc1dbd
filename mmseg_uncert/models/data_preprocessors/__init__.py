from .source_target_data_preprocessor import (SourceTargetDataPreProcessor, image_mask,
                                              is_source_target,
                                              source_target_preprocessor)

__all__ = ['SourceTargetDataPreProcessor', 'image_mask', 'is_source_target',
           'source_target_preprocessor']
