from .infer_files import infer_files
from .inference import (deploy_model_config, init_uncertainty_model,
                        student_state_dict)
from .inference_inputs import InferenceInputError, named_inputs
from .uncertainty_inferencer import UncertaintyInferencer

__all__ = ['deploy_model_config', 'init_uncertainty_model', 'student_state_dict',
           'infer_files', 'InferenceInputError', 'named_inputs',
           'UncertaintyInferencer']
