from .cascade import final_head
from .distillation_teacher import build_teacher
from .ensemble_distiller import EnsembleDistiller
from .ensemble_segmentor import EnsembleSegmentor
from .mc_dropout_segmentor import MCDropoutSegmentor, dropout_layers
from .members import build_member, drop_pretrained, load_config, mmseg_scope
from .predictive_segmentor import PredictiveSegmentor
from .proda_segmentor import ProDASegmentor
from .uncertainty_cascade_encoder_decoder import UncertaintyCascadeEncoderDecoder
from .uncertainty_encoder_decoder import UncertaintyEncoderDecoder

__all__ = ['EnsembleDistiller', 'build_teacher', 'EnsembleSegmentor', 'MCDropoutSegmentor',
           'PredictiveSegmentor', 'ProDASegmentor', 'UncertaintyCascadeEncoderDecoder',
           'UncertaintyEncoderDecoder', 'build_member', 'dropout_layers', 'final_head',
           'drop_pretrained', 'load_config', 'mmseg_scope']
from .tta_segmentor import TTASegmentor
from .uncertainty_tta_model import UncertaintyTTAModel

__all__ += ['TTASegmentor', 'UncertaintyTTAModel']
from .calibrated_segmentor import CalibratedSegmentor

__all__ += ['CalibratedSegmentor']
