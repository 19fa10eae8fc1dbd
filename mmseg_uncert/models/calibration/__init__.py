from .calibration_set import CalibrationImage, CalibrationSet
from .local_temperature_scaling import LocalTemperatureScaling
from .temperature_scaling import TemperatureScaling, check_temperature
from .vector_scaling import VectorScaling

__all__ = ['CalibrationImage', 'CalibrationSet', 'LocalTemperatureScaling',
           'TemperatureScaling', 'VectorScaling', 'check_temperature']
