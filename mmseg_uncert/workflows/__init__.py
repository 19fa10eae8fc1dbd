"""What the tools and benchmarks run on top of the package: evaluating models
on a split, fitting post-hoc calibration, the demo and distillation reports,
and the check of which mmseg decode heads a DualHead wraps. Not the public
inference API (that is :mod:`mmseg_uncert.apis`); imported by name, e.g.
``from mmseg_uncert.workflows.split_evaluation import evaluate_model``."""
