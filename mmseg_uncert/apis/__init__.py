from .inference import (deploy_model_config, init_uncertainty_model,
                        student_state_dict)

__all__ = ['deploy_model_config', 'init_uncertainty_model', 'student_state_dict']
