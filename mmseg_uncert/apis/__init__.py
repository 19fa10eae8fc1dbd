from .inference import (deploy_model_config, init_uncertainty_model,
                        student_state_dict)
from .inference_inputs import InferenceInputError, named_inputs
from .onnx_export import (UnsupportedModelError, export_onnx,
                          export_onnx_from_config, verify_onnx)
from .uncertainty_inferencer import UncertaintyInferencer

__all__ = ['deploy_model_config', 'init_uncertainty_model', 'student_state_dict',
           'InferenceInputError', 'named_inputs',
           'UncertaintyInferencer', 'UnsupportedModelError', 'export_onnx',
           'export_onnx_from_config', 'verify_onnx']
