"""Predictive uncertainty of M probability maps, accumulated one map at a time.

For member probabilities p_m (ensemble members or MC-dropout samples),
m = 1..M, per pixel:

* mean p̄ = (1/M) Σ_m p_m, prediction ĉ = argmax_c p̄_c;
* ``total`` = predictive entropy H[p̄] = −Σ_c p̄_c log p̄_c;
* ``aleatoric`` = expected entropy (1/M) Σ_m H[p_m];
* ``epistemic`` = mutual information H[p̄] − (1/M) Σ_m H[p_m] (≥ 0);
* ``std`` = sqrt((1/M) Σ_m (p_m,ĉ − p̄_ĉ)²), the spread of the members at the
  predicted class;
* ``variation_ratio`` = 1 − f/M, f the number of members whose own prediction
  is the most frequent one.

Only running statistics (mean, squared deviations, Σ H[p_m], vote counts)
are kept, never the M maps.

References:
    Lakshminarayanan et al., "Simple and Scalable Predictive Uncertainty
    Estimation using Deep Ensembles", NeurIPS 2017.
    Gal & Ghahramani, "Dropout as a Bayesian Approximation", ICML 2016.
    Depeweg et al., "Decomposition of Uncertainty in Bayesian Deep Learning
    for Efficient and Risk-sensitive Learning", ICML 2018 (entropy split).
    Freeman, "Elementary Applied Statistics", 1965 (variation ratio).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

from .precision import at_least_float32

#: the per-pixel maps a predictive distribution is decomposed into
UNCERTAINTY_NAMES = ('total', 'aleatoric', 'epistemic', 'std', 'variation_ratio')


def entropy(prob: Tensor, dim: int = 1) -> Tensor:
    """H[p] = −Σ_c p_c log p_c along ``dim`` (0 log 0 = 0)."""
    return torch.special.entr(prob).sum(dim)


class PredictiveStatistics:
    """Running statistics of M probability maps of shape (B, C, H, W).

    ``add`` one member's softmax at a time; ``mean`` and ``decompose`` give
    the maps of the module docstring. The mean and the sum of squared
    deviations are updated by Welford's algorithm (Welford, Technometrics
    1962): sums of p and p² would leave the small spreads of agreeing members
    to the cancellation of two nearly equal float32 numbers. Memory: two
    (B, C, H, W) float maps (the squared deviations from the second member
    on), one (B, H, W) sum, and the votes: each member's prediction (one
    byte a pixel, two above 256 classes) while they take less memory than
    counts per class would, then the counts (one byte a class and pixel up
    to 255 members). ``add_bands`` takes a member in row bands, as a
    slide-mode pass finishes them.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean_prob: Tensor | None = None
        #: from the second member on
        self.squared_deviation: Tensor | None = None
        self.sum_entropy: Tensor | None = None
        #: each member's prediction (B, 1, H, W), while fewer than the classes
        self.predictions: list[Tensor] = []
        #: votes per class (B, C, H, W), from then on
        self.votes: Tensor | None = None

    def add(self, prob: Tensor) -> None:
        """Fold in one member's probabilities (B, C, H, W)."""
        _check_4d(prob)
        self.add_bands([(0, prob)], prob.shape[2])

    def add_bands(self, bands: Iterable[tuple[int, Tensor]], height: int) -> None:
        """Fold in one member's probabilities given as row bands ``(top,
        probabilities of rows top..top + h)``, (B, C, h, W), top to bottom,
        covering rows 0..``height``: the statistics are the same as ``add``'s
        of the whole map, bit for bit (tested). A slide-mode pass hands its
        rows over as they are final, so no full-size map of the member is
        ever held besides the statistics."""
        row = 0
        for top, prob in bands:
            if top != row:
                raise ValueError(
                    f'member {self.count}: a band starts at row {top}, the '
                    f'bands before it end at row {row}; bands go top to bottom '
                    f'without gaps')
            self._add_rows(prob, top, height)
            row = top + prob.shape[2]
            del prob  # not kept while the next band is computed
        if row != height:
            raise ValueError(f'member {self.count}: the bands cover rows 0..{row} '
                             f'of an image {height} rows high')
        self.count += 1

    def _add_rows(self, prob: Tensor, top: int, height: int) -> None:
        """Fold rows top..top + h of the current member's probabilities
        (B, C, h, W) into the statistics' rows."""
        _check_4d(prob)
        # float16 members are accumulated in float32 (float64 stays)
        prob = at_least_float32(prob)
        batch, num_classes, _, width = prob.shape
        rows = slice(top, top + prob.shape[2])
        shape = (batch, num_classes, height, width)
        if self.mean_prob is None:
            self.mean_prob = prob.new_empty(shape)
            self.sum_entropy = prob.new_empty((batch, height, width))
        if self.mean_prob.shape != shape:
            raise ValueError(f'member {self.count} gave probabilities of shape '
                             f'{shape}, earlier members {tuple(self.mean_prob.shape)}')
        if rows.stop > height:
            raise ValueError(f'member {self.count}: a band of rows {top}..{rows.stop} '
                             f'of an image {height} rows high')
        if self.count == 0:
            self.mean_prob[:, :, rows] = prob
            self.sum_entropy[:, rows] = entropy(prob)
        else:
            if self.squared_deviation is None:
                # from the second member on: a first member in slide mode
                # does not hold it through its pass
                self.squared_deviation = torch.zeros_like(self.mean_prob)
            mean = self.mean_prob[:, :, rows]
            delta = prob - mean
            mean.add_(delta, alpha=1.0 / (self.count + 1))
            # (p − mean_old)(p − mean_new) = δ²·n/(n+1): one full-size
            # temporary fewer than forming p − mean_new
            self.squared_deviation[:, :, rows].addcmul_(
                delta, delta, value=self.count / (self.count + 1))
            self.sum_entropy[:, rows] += entropy(prob)
        if top == 0:
            self._start_votes()
        prediction = prob.argmax(1, keepdim=True)
        if self.votes is None:
            self.predictions[-1][:, :, rows] = prediction
        else:
            _vote(self.votes[:, :, rows], prediction)

    def _start_votes(self) -> None:
        """Room for the current member's vote: a prediction map while the
        predictions take less memory than counts per class (5 members, 19
        classes: 10 against 38 MiB at 1024x2048, held through every member's
        pass), then the counts."""
        batch, num_classes, height, width = self.mean_prob.shape
        label_dtype, label_bytes = ((torch.uint8, 1) if num_classes <= 256
                                    else (torch.int16, 2))
        if self.votes is None and (self.count + 1) * label_bytes < num_classes:
            self.predictions.append(torch.empty((batch, 1, height, width), dtype=label_dtype,
                                                device=self.mean_prob.device))
            return
        if self.votes is None:
            self.votes = self._vote_counts()
            self.predictions = []
        if self.count == 255 and self.votes.dtype == torch.uint8:
            self.votes = self.votes.to(torch.int32)

    def _vote_counts(self) -> Tensor:
        """The stored predictions' votes per class (B, C, H, W), in 8 bits up
        to 255 members (there may be none stored yet: a single-channel model)."""
        batch, num_classes, height, width = self.mean_prob.shape
        votes = torch.zeros((batch, num_classes, height, width),
                            dtype=torch.uint8 if self.count < 255 else torch.int32,
                            device=self.mean_prob.device)
        for prediction in self.predictions:
            _vote(votes, prediction)
        return votes

    def _check(self) -> None:
        if self.count == 0:
            raise RuntimeError('PredictiveStatistics: no member added')

    def mean(self) -> Tensor:
        """p̄, (B, C, H, W)."""
        self._check()
        return self.mean_prob

    def class_std(self) -> Tensor:
        """The members' spread per class, sqrt((1/M) Σ_m (p_m,c − p̄_c)²),
        (B, C, H, W): the target of the forum thread's per-class student."""
        self._check()
        if self.squared_deviation is None:  # one member: no spread
            return torch.zeros_like(self.mean_prob)
        return (self.squared_deviation / self.count).clamp(min=0).sqrt()

    def decompose(self) -> dict[str, Tensor]:
        """The maps named in :data:`UNCERTAINTY_NAMES`, each (B, H, W)."""
        self._check()
        mean = self.mean_prob
        total = entropy(mean)
        aleatoric = self.sum_entropy / self.count
        # H[p̄] >= mean H[p_m] by concavity; the clamp only removes rounding
        epistemic = (total - aleatoric).clamp_(min=0)
        pred = mean.argmax(1, keepdim=True)
        if self.squared_deviation is None:  # one member: no spread
            std = torch.zeros_like(total)
        else:
            variance = self.squared_deviation.gather(1, pred)[:, 0] / self.count
            std = variance.clamp_(min=0).sqrt_()
        votes = self.votes if self.votes is not None else self._vote_counts()
        modal = votes.amax(1).float()
        variation_ratio = 1.0 - modal / self.count
        return dict(total=total, aleatoric=aleatoric, epistemic=epistemic,
                    std=std, variation_ratio=variation_ratio)


def _check_4d(prob: Tensor) -> None:
    if prob.dim() != 4:
        raise ValueError(f'PredictiveStatistics expects (B, C, H, W) '
                         f'probabilities, got shape {tuple(prob.shape)}')


def _vote(votes: Tensor, prediction: Tensor) -> None:
    """Add one vote per pixel to ``votes`` (B, C, H, W) at ``prediction``
    (B, 1, H, W)."""
    votes.scatter_add_(1, prediction.long(),
                       votes.new_ones(()).expand(prediction.shape))


def dirichlet_uncertainty(log_concentration: Tensor) -> dict[str, Tensor]:
    """``total``, ``aleatoric`` and ``epistemic`` of a Dirichlet prediction.

    A Prior Network's (or an EnD² student's) output per pixel is a Dirichlet
    Dir(π | α) over categorical distributions, α_c = exp(z_c) from the
    logits z (B, C, H, W). With α₀ = Σ_c α_c (Malinin & Gales, "Predictive
    Uncertainty Estimation via Prior Networks", NeurIPS 2018; Malinin et al.,
    "Ensemble Distribution Distillation", ICLR 2020):

    * ``total`` = H[E π] = H[α / α₀] = H[softmax(z)];
    * ``aleatoric`` = E_Dir H[π] = −Σ_c (α_c/α₀)(ψ(α_c + 1) − ψ(α₀ + 1));
    * ``epistemic`` = mutual information = total − aleatoric (≥ 0).

    They are the ensemble maps of the module docstring with the members'
    distribution replaced by the Dirichlet. Each is (B, H, W), computed in
    (at least) float32.
    """
    z = at_least_float32(log_concentration)
    mean = z.softmax(1)
    # α = exp(z) overflows float32 above z ≈ 88; the maps depend on z only
    # through α, and a shift of z multiplies α by a constant, so the logits are
    # capped at 80 (α₀ about 10³⁵: a Dirichlet as sharp as a point mass)
    alpha = z.clamp(max=80.0).exp()
    alpha0 = alpha.sum(1, keepdim=True)
    total = entropy(mean)
    aleatoric = -(mean * (torch.digamma(alpha + 1) - torch.digamma(alpha0 + 1))).sum(1)
    epistemic = (total - aleatoric).clamp_(min=0)
    return dict(total=total, aleatoric=aleatoric, epistemic=epistemic)
