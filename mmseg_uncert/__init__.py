"""mmseg-uncert: uncertainty estimation and distillation for MMSegmentation 1.x.

Importing the package registers its components into mmseg's registries and
allow-lists the types that mmengine checkpoints carry, so ``--resume`` and
``load_from`` work on torch >= 2.6 without turning ``weights_only`` off
(see :mod:`mmseg_uncert.compat`). Enable it in a config with::

    custom_imports = dict(imports=['mmseg_uncert'], allow_failed_imports=False)
"""
import warnings

from .utils.dependencies import check_dependencies

check_dependencies()
# mmseg's Mask2Former head imports mmdet, which imports imagecorruptions,
# which imports pkg_resources, which warns that it is deprecated: on every
# run, and none of it ours to fix (setup_env.sh pins setuptools < 81, where
# pkg_resources still exists). Only that warning is silenced.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated as an API',
                        category=UserWarning)

from . import compat  # noqa: E402
from .datasets import *  # noqa: E402,F401,F403
from .engine import *  # noqa: E402,F401,F403
from .evaluation import *  # noqa: E402,F401,F403
from .models import *  # noqa: E402,F401,F403
from .visualization import *  # noqa: E402,F401,F403
from .version import __version__  # noqa: E402

compat.register_checkpoint_safe_globals()
compat.register_checkpoint_loader()

__all__ = ['__version__']
