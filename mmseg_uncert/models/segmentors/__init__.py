from .ensemble_distiller import EnsembleDistiller, build_teacher
from .ensemble_segmentor import EnsembleSegmentor
from .mc_dropout_segmentor import MCDropoutSegmentor, dropout_layers
from .members import build_member, load_config, mmseg_scope
from .predictive_segmentor import PredictiveSegmentor
from .proda_segmentor import ProDASegmentor
from .uncertainty_encoder_decoder import UncertaintyEncoderDecoder

__all__ = ['EnsembleDistiller', 'build_teacher', 'EnsembleSegmentor', 'MCDropoutSegmentor', 'PredictiveSegmentor',
           'ProDASegmentor',            'UncertaintyEncoderDecoder',
           'build_member', 'dropout_layers', 'load_config',
           'mmseg_scope']
