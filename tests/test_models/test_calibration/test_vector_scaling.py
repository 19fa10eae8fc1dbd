"""VectorScaling: the fit against scipy's L-BFGS-B on the naive NLL."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize
from scipy.special import log_softmax

from mmseg_uncert.models.calibration import VectorScaling

from helpers.calibration import _cache, _overconfident, _valid


def test_vector_scaling_equals_scipys_lbfgs_on_the_naive_nll(tmp_path):
    images = _overconfident(2)
    model = VectorScaling(num_classes=4)
    fit = model.fit(_cache(tmp_path, images))
    z, y = _valid(images)

    def nll_and_grad(params):
        w, b = params[:4], params[4:]
        zz = z * w + b
        log_p = log_softmax(zz, 1)
        p = np.exp(log_p)
        d = (p - np.eye(4)[y]) / len(y)  # dNLL/dz'
        return -log_p[np.arange(len(y)), y].mean(), np.concatenate([(d * z).sum(0), d.sum(0)])

    ref = optimize.minimize(nll_and_grad, np.r_[np.ones(4), np.zeros(4)], jac=True,
                            method='L-BFGS-B', options=dict(ftol=1e-15, gtol=1e-12))
    # The model evaluates the NLL in float32: a few eps times |z'| + log C
    # per pixel. Its minimum is then defined only to that...
    eps = np.finfo(np.float32).eps
    nll_error = 8 * eps * (np.abs(z * ref.x[:4] + ref.x[4:]).max() + np.log(4))
    assert fit['nll'] == pytest.approx(ref.fun, rel=1e-6, abs=nll_error)
    # ... and its parameters only to sqrt(2 · NLL error / λ_min), λ_min the
    # flattest curvature of the NLL (the Hessian from the gradient's central
    # differences), the biases' common shift left out: softmax ignores it.
    step = 1e-5
    hessian = np.stack([(nll_and_grad(ref.x + step * e)[1] - nll_and_grad(ref.x - step * e)[1])
                        / (2 * step) for e in np.eye(8)])
    shift = np.r_[np.zeros(4), np.ones(4)] / 2
    project = np.eye(8) - np.outer(shift, shift)
    curvature = np.linalg.eigvalsh(project @ (hessian + hessian.T) / 2 @ project)
    parameter_error = 3 * np.sqrt(2 * nll_error / curvature[curvature > 1e-9].min())
    bias = model.bias.detach().double().numpy()
    np.testing.assert_allclose(model.scale.detach().double().numpy(), ref.x[:4],
                               atol=parameter_error)
    np.testing.assert_allclose(bias - bias.mean(), ref.x[4:] - ref.x[4:].mean(),
                               atol=parameter_error)
