"""Streaming maths of the uncertainty metrics: sums and histograms, no pixels kept.

:func:`add_stripe_sums` reduces a stripe of an image (whole rows) to the sums
and histograms that :class:`~mmseg_uncert.evaluation.UncertaintyMetric` adds
up over a run, on the stripe's device; the functions below it turn the totals
into metrics.

Calibration sums are exact. Ranking metrics (AUROC, AUPR, FPR95, AURC,
PAvPU) are computed from histograms of the score over :data:`NUM_SCORE_BINS`
bins whose width is *relative* to the score (:func:`score_bins`): the bins
follow the bit pattern of the float32 value, its exponent and its leading
:data:`MANTISSA_BITS` mantissa bits, so two scores share a bin only when they
agree to about 1 part in 2**10, at 1e-9 as at 0.5 (1 part in 2**6 below
9e-13). Pixels whose scores fall in one bin count as tied, exactly as tied
scores count in scikit-learn's ``roc_curve``/``average_precision_score``.
Equal-width bins on [0, 1] cannot do this: a confident model puts most
pixels' 1 − max p below 1e-4, all in the first bin.

The scores of the probabilities themselves are computed where they are
exact (:func:`pixel_statistics`): 1 − max p and the entropy from the odds
p_c / p_ĉ against the prediction ĉ, never as a difference of numbers near 1.

References:
    Guo et al., "On Calibration of Modern Neural Networks", ICML 2017 (ECE, MCE).
    Nixon et al., "Measuring Calibration in Deep Learning", CVPRW 2019
    (adaptive/equal-mass ECE); Kull et al., NeurIPS 2019 (class-wise ECE).
    Geifman et al., "Bias-Reduced Uncertainty Estimation for Deep Neural
    Classifiers", ICLR 2019 (AURC, E-AURC).
    Mukhoti & Gal, "Evaluating Bayesian Deep Learning Methods for Semantic
    Segmentation", 2018 (PAvPU).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

#: the scores computed from the probabilities themselves
BUILTIN_SCORES = ('max_prob', 'entropy')


def is_signed(score_name: str) -> bool:
    """Whether a score's histograms need the negative bins: a model's own
    map may take any real value; 1 − max p and the entropy are ≥ 0 by their
    construction in :func:`pixel_statistics`."""
    return score_name not in BUILTIN_SCORES


# ------------------------------------------------------------ score bins
#: mantissa bits a score bin keeps from 2**MIN_EXPONENT up: bins 2**-10
#: (about 0.1%) wide relative to the score. Coarser bins move FPR95 and PAvPU
#: (first order in the width: the negatives of the threshold's bin) by more
#: than 1e-3 on scores spread evenly over [0.3, 0.9]; finer ones cost memory.
MANTISSA_BITS = 10
#: below 2**MIN_EXPONENT (about 9e-13), down to float32's smallest normal
#: number 2**-126, bins keep 6 mantissa bits (1.6% wide): a confident model
#: puts pixels there (1 − max p of 1e-20 is an ordinary float32), few enough
#: per bin that coarser bins cost nothing measurable, and 10 bits there would
#: more than double the histograms. Smaller magnitudes (0 and float32's
#: subnormals) share the zero bin; from 2**MAX_EXPONENT (about 1.7e7) up,
#: values share the outermost bins.
TAIL_MANTISSA_BITS = 6
MIN_EXPONENT, MAX_EXPONENT = -40, 24
_TAIL_LEVELS = (MIN_EXPONENT + 126) << TAIL_MANTISSA_BITS
#: magnitude levels: 0 (below 2**-126), the tail's, the main range's
_LEVELS = _TAIL_LEVELS + ((MAX_EXPONENT - MIN_EXPONENT) << MANTISSA_BITS)
#: bins of a score histogram: the negative magnitudes, zero, the positive ones
NUM_SCORE_BINS = 2 * _LEVELS + 1
#: the bin of 0 (and of every |s| < 2**-126)
ZERO_BIN = _LEVELS
#: bins of a non-negative score's histogram (1 − max p, the entropy): zero
#: and the positive magnitudes, half the memory
NUM_NONNEGATIVE_BINS = _LEVELS + 1
#: float32 bit patterns (exponent field, then 23 mantissa bits) of 2**-126
#: and 2**MIN_EXPONENT, shifted to the bits each range keeps
_TAIL_LOW = 1 << TAIL_MANTISSA_BITS
_MAIN_LOW = (127 + MIN_EXPONENT) << MANTISSA_BITS
_MAIN_START = (127 + MIN_EXPONENT) << 23


def num_score_bins(signed: bool) -> int:
    """Bins of a histogram of signed or of non-negative scores."""
    return NUM_SCORE_BINS if signed else NUM_NONNEGATIVE_BINS


#: the leading bits of a float32 that decide its bin: the sign, the 8
#: exponent bits and the leading MANTISSA_BITS mantissa bits
PREFIX_BITS = 1 + 8 + MANTISSA_BITS
#: the bin of every prefix, int64, per device and signedness, built at the
#: first call from :func:`bins_of_bits` (4 MiB signed, 2 MiB non-negative)
_BIN_TABLES: dict[tuple[torch.device, bool], Tensor] = {}


def bins_of_bits(bits: Tensor, signed: bool = True) -> Tensor:
    """The bins of float32 bit patterns (int32), computed from the bits: the
    definition that :func:`score_bins` reads from a table."""
    magnitude = bits & 0x7FFFFFFF
    tail = (magnitude >> (23 - TAIL_MANTISSA_BITS)) - (_TAIL_LOW - 1)
    main = (magnitude >> (23 - MANTISSA_BITS)) - (_MAIN_LOW - 1 - _TAIL_LEVELS)
    # both levels grow with the magnitude and meet at 2**MIN_EXPONENT, the
    # main one 2**4 times faster: the larger of the two is the tail's below
    # it and the main one's from it on
    level = torch.maximum(tail, main).clamp_(0, _LEVELS).long()
    if not signed:
        return level
    # the sign bit spread over the word: 0 for s >= 0, -1 (all ones) for
    # s < 0, and (level ^ -1) + 1 = -level in two's complement
    sign = (bits >> 31).long()
    return level.bitwise_xor_(sign).sub_(sign).add_(ZERO_BIN)


def _bin_table(device: torch.device, signed: bool) -> Tensor:
    """:func:`bins_of_bits` of every prefix (of every magnitude's prefix when
    not ``signed``), the bits below the prefix zero."""
    key = (device, signed)
    if key not in _BIN_TABLES:
        prefixes = torch.arange(1 << (PREFIX_BITS - (not signed)), device=device)
        # the prefix in the top bits; the int64 to int32 cast keeps the low 32
        # bits, the sign bit included
        bits = (prefixes << (32 - PREFIX_BITS)).to(torch.int32)
        _BIN_TABLES[key] = bins_of_bits(bits, signed)
    return _BIN_TABLES[key]


def score_bins(score: Tensor, signed: bool = True) -> Tensor:
    """The bin (int64, in [0, num_score_bins(signed))) of every score, in the
    score's order: s < s' implies bin(s) <= bin(s').

    The bits of a non-negative float32 read as an integer grow with the value;
    dropping the low mantissa bits keeps the exponent and the leading
    :data:`MANTISSA_BITS` (:data:`TAIL_MANTISSA_BITS` below
    2**MIN_EXPONENT), so a bin spans [2^e (1 + k/2^10), 2^e (1 + (k+1)/2^10)).
    Negative scores mirror the positive bins below :data:`ZERO_BIN`; with
    ``signed=False`` (scores known to be ≥ 0, such as 1 − max p and the
    entropy) the bin is the magnitude's level alone. Scores in float64 are
    rounded to float32 first (order kept, ties only within float32
    precision).

    The bin depends on the leading :data:`PREFIX_BITS` bits alone, so it is
    read from a table of every prefix's bin (:func:`bins_of_bits`): a shift,
    a mask and a lookup, where the arithmetic took ten elementwise passes
    (3x as long on the metric's five scores, 2 CPU cores).
    """
    bits = score.to(torch.float32).view(torch.int32)
    # an arithmetic shift: the mask drops the sign's copies (and the sign
    # itself for the non-negative table)
    prefix = (bits >> (32 - PREFIX_BITS)).bitwise_and_(
        (1 << (PREFIX_BITS - (not signed))) - 1)
    table = _bin_table(score.device, signed)
    return table.index_select(0, prefix.reshape(-1)).view(score.shape)


def counts(index: Tensor, size: int, weights: Tensor | None = None) -> Tensor:
    """Float64 counts (or sums of ``weights``) of every index in [0, size):
    ``bincount`` with a fixed length, which also runs on any device."""
    out = torch.zeros(size, dtype=torch.float64, device=index.device)
    return add_counts(out, index, weights)


def add_counts(out: Tensor, index: Tensor, weights: Tensor | None = None) -> Tensor:
    """Add the counts (or sums of ``weights``) of ``index`` to ``out`` in
    place (a flat float64 tensor); returns ``out``."""
    values = (out.new_ones(()).expand(index.numel()) if weights is None
              else weights.reshape(-1).to(torch.float64))
    # scatter_add_ rather than index_add_: the same sums, and 1.2x to 1.5x
    # faster on the CPU for the metric's 2**16 indices (2 cores)
    return out.scatter_add_(0, index.reshape(-1), values)


def two_class_histogram(score: Tensor, positive: Tensor, signed: bool = True) -> Tensor:
    """Histograms (2, bins) of scores: row 0 of the positive pixels, row 1
    of the others."""
    out = score.new_zeros((2, num_score_bins(signed)), dtype=torch.float64)
    return add_two_class_histogram(out, score, positive, signed)


def add_two_class_histogram(out: Tensor, score: Tensor, positive: Tensor,
                            signed: bool) -> Tensor:
    """Add the scores to ``out`` (2, bins), positives to row 0; returns it."""
    size = out.shape[1]
    add_counts(out.view(-1), score_bins(score, signed).add_((~positive).long(), alpha=size))
    return out


def equal_bins(value: Tensor, num_bins: int) -> Tensor:
    """Bin of each [0, 1] value among ``num_bins`` equal bins (1.0 in the
    last): the bins of ECE, MCE and cwECE, as their definitions have them."""
    return (value * num_bins).long().clamp_(0, num_bins - 1)


# ------------------------------------------------------- per-pixel values
def all_finite(values: Tensor) -> bool:
    """Whether every value is finite (no NaN, no ±Inf).

    NaN and ±Inf carry through a sum (+Inf and −Inf together to NaN), so a
    finite sum means finite values; a sum that is not finite is a bad value
    or an overflow, and ``aminmax`` (which propagates NaN: the smallest and
    largest values are both finite exactly when all are) tells which. The
    sum is one reduction, half as long as ``aminmax`` on a 19-class
    1024x2048 output; ``isfinite(v).all()`` first writes a bool tensor as
    large as ``v`` and took 20x longer (2 CPU cores).
    """
    if values.numel() == 0:
        return True
    if bool(torch.isfinite(values.sum())):
        return True
    low, high = torch.aminmax(values)
    return bool(torch.isfinite(low) & torch.isfinite(high))


def first_argmax(values: Tensor, top: Tensor) -> Tensor:
    """The index over dim 0 of ``top`` = ``values.amax(0)``, the first among
    ties, as ``values.max(0)`` and ``argmax`` give it.

    Every position equal to the maximum gets the weight C − c, largest for
    the first class, and the largest weight is kept: two elementwise passes
    and an ``amax``, where ``max(0)`` with indices reduces across the
    contiguous pixel dimension one pixel at a time (3.5x slower on the
    metric's (C, pixels) stripes, 2 CPU cores). A pixel whose values are NaN
    equals no maximum and gets the last class; its probabilities stay NaN.
    """
    C = values.shape[0]
    # 1.0 at the maxima, written as float: a comparison writing bools ran 4x
    # slower on the CPU (torch 2.x, 2 cores). float32 holds the weights of
    # up to 2**24 classes exactly
    at_top = torch.eq(values, top, out=torch.empty_like(values, dtype=torch.float32))
    weight = torch.arange(C, 0, -1, dtype=at_top.dtype, device=values.device)
    first = at_top.mul_(weight.view(C, *([1] * (values.dim() - 1)))).amax(0)
    return first.long().neg_().add_(C).clamp_(max=C - 1)


class PixelStatistics(NamedTuple):
    """Per-pixel quantities of p = softmax(z) against labels y (each (N,))."""
    prob: Tensor        #: (C, N) the probabilities
    confidence: Tensor  #: p_ĉ = max_c p_c
    max_prob: Tensor    #: 1 − p_ĉ, with full relative precision near 0
    correct: Tensor     #: ĉ == y (ĉ = argmax, the first class among ties)
    log_p_true: Tensor  #: log p_y
    p_true: Tensor      #: p_y
    brier: Tensor       #: Σ_c (p_c − 1[y = c])²
    entropy: Tensor | None  #: −Σ_c p_c log p_c (None unless asked for)


def pixel_statistics(logits: Tensor, label: Tensor,
                     with_entropy: bool = True) -> PixelStatistics:
    """:class:`PixelStatistics` of logits (C, N) and labels (N,) in [0, C).

    Computed in float32 (float16 logits are widened) or in float64 when given
    it, from the odds r_c = p_c / p_ĉ = exp(z_c − z_ĉ) ≤ 1 against the
    prediction ĉ and their sum ε = Σ_{c≠ĉ} r_c:

        p_ĉ = 1 / (1 + ε),   1 − p_ĉ = ε / (1 + ε),   log p_c = (z_c − z_ĉ) − log1p(ε),
        H = −Σ_c p_c log p_c = log1p(ε) + Σ_c r_c (z_ĉ − z_c) / (1 + ε).

    Every term is a sum of non-negative numbers, so 1 − max p and H keep
    their relative precision however confident the pixel (checked against
    float64 down to 1e-9 in the tests), where 1 − max p computed as a
    difference, or H from p log p, round to 0 below about 1e-7.
    """
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    top = logits.amax(0)
    prediction = first_argmax(logits, top)
    at_prediction = prediction[None]
    gap = logits - top                                   # z_c − z_ĉ ≤ 0
    odds = gap.exp().scatter_(0, at_prediction, 0.0)     # r_c, 0 at ĉ
    rest = odds.sum(0)                                   # ε
    log_norm = torch.log1p(rest)                         # −log p_ĉ
    entropy = None
    if with_entropy:
        entropy = log_norm - (odds * gap).sum(0) / (1.0 + rest)
    prob = odds.scatter_(0, at_prediction, 1.0).div_(1.0 + rest)
    y = label.long()[None]
    p_true = prob.gather(0, y)[0]
    # Brier: Σ_c (p_c − 1[y = c])² = Σ_c p_c² − 2 p_y + 1
    brier = (prob * prob).sum(0) - 2 * p_true + 1
    return PixelStatistics(
        prob=prob, confidence=1.0 / (1.0 + rest), max_prob=rest / (1.0 + rest),
        correct=prediction == y[0], log_p_true=gap.gather(0, y)[0] - log_norm,
        p_true=p_true, brier=brier, entropy=entropy)


# ------------------------------------------------------------- histograms
def add_calibration_histogram(out: Tensor, bins: Tensor, confidence: Tensor,
                              correct: Tensor) -> Tensor:
    """Add to ``out`` (3, num_bins), per bin: wrong count, right count,
    confidence sum; returns ``out``."""
    num_bins = out.shape[1]
    add_counts(out[:2].view(-1), bins + num_bins * correct.long())
    add_counts(out[2], bins, confidence)
    return out


def classwise_histogram(prob: Tensor, label: Tensor, num_bins: int,
                        p_true: Tensor | None = None) -> Tensor:
    """(3, C, num_bins) per class c and equal bin of p_c: count, sum of p_c,
    and count of pixels labelled c (the last binned by p_y; ``p_true``, when
    given, is p_y, as :class:`PixelStatistics` has it).

    Most p_c lie in bin 0 (below 1/num_bins); only the others, a few per
    pixel, are binned one by one. Bin 0 gets the rest: each class's pixel
    count minus theirs (exact), and the sum of its values below 1/num_bins,
    summed in float32 (within the relative error n·2**-24 of a float32 sum
    of the stripe's n values, 2**16 for images up to 16384 wide; float64
    from there on). Binning all C x N values would cost several times the
    rest of the metric; a float64 copy of ``prob`` for the sum cost 15 % of
    it (2 CPU cores).
    """
    C, n = prob.shape
    # 1.0 where p_c >= 1/num_bins, as float (a comparison writing bools
    # ran 4x slower on the CPU); bools only for nonzero
    upper_mask = torch.ge(prob, 1.0 / num_bins, out=torch.empty_like(prob))
    upper = torch.nonzero(upper_mask.bool().reshape(-1)).squeeze(1)  # prob may be strided
    upper_prob = prob.reshape(-1)[upper]
    index = equal_bins(upper_prob, num_bins).add_(
        upper.div_(n, rounding_mode='floor'), alpha=num_bins)
    number = counts(index, C * num_bins).view(C, num_bins)
    prob_sum = counts(index, C * num_bins, upper_prob).view(C, num_bins)
    number[:, 0] += n - number.sum(1)
    # p − p·1 = 0 and p − p·0 = p, both exact: the values below 1/num_bins
    prob_sum[:, 0] += torch.addcmul(prob, prob, upper_mask, value=-1.0).sum(1).double()
    if p_true is None:
        p_true = prob.gather(0, label.long()[None])[0]
    labelled = counts(equal_bins(p_true, num_bins).add_(label.long(), alpha=num_bins),
                      C * num_bins).view(C, num_bins)
    return torch.stack([number, prob_sum, labelled])


def _histogram(into: dict[str, Tensor], key: str, shape: tuple[int, ...],
               like: Tensor) -> Tensor:
    """``into[key]``, a float64 histogram allocated at an image's first
    stripe: one per image, not one per stripe."""
    if key not in into:
        into[key] = torch.zeros(shape, dtype=torch.float64, device=like.device)
    return into[key]


def _add_score_histograms(into: dict[str, Tensor], key: str, values: Tensor,
                          positive: Tensor) -> None:
    """Add the scores ``values`` (n, S), a pixel's S scores side by side, to
    ``into[key]`` (S, 2, NUM_SCORE_BINS: per score, the positives'
    histogram, then the others'), all S in one scatter: each step is one op
    for all the scores, not one per score.

    Side by side, the S counts of a pixel go to S histograms in turn: a
    model's score is nearly constant over a region, and one score's
    neighbouring pixels, added one after another, wait on the same bin
    (3x as long with each score's pixels in a row, 2 CPU cores).
    """
    num_scores = values.shape[1]
    out = _histogram(into, key, (num_scores, 2, NUM_SCORE_BINS), values)
    index = score_bins(values).add_((~positive).long()[:, None], alpha=NUM_SCORE_BINS)
    index += torch.arange(0, 2 * NUM_SCORE_BINS * num_scores, 2 * NUM_SCORE_BINS,
                          device=values.device)
    add_counts(out.view(-1), index)


def per_score_histograms(into: dict[str, Tensor], scores: tuple[str, ...]) -> None:
    """Split the stacked histograms that :func:`add_stripe_sums` leaves in
    ``into`` (``mis``, ``patch``, ``ood``, ``aleatoric``: S, 2,
    NUM_SCORE_BINS) into one two-row histogram per score, ``into[f'{key}/{s}']``;
    a score that is never negative keeps its bins from :data:`ZERO_BIN` up,
    ``num_score_bins(False)`` of them, as :func:`score_bins` gives it with
    ``signed=False``. Each is a copy, so that the stacked histograms are
    freed (a view would keep them, twice the size, in the metric's state)."""
    for key in ('mis', 'patch', 'ood', 'aleatoric'):
        stacked = into.pop(key, None)
        if stacked is None:
            continue
        for name, histogram in zip(scores, stacked):
            into[f'{key}/{name}'] = (histogram if is_signed(name)
                                     else histogram[:, ZERO_BIN:]).clone()


def _add(into: dict[str, Tensor], key: str, value: Tensor) -> None:
    if key in into:
        into[key] += value
    else:
        into[key] = value


def add_stripe_sums(into: dict[str, Tensor], logits: Tensor, label: Tensor,
                    maps: dict[str, Tensor], ood: Tensor | None,
                    aleatoric: Tensor | None, *, scores: tuple[str, ...],
                    num_ece_bins: int, patch_size: int, ignore_index: int) -> None:
    """Add the sums and histograms of one stripe of an image to ``into``, on
    the stripe's device.

    Args:
        into: the image's sums so far (empty at its first stripe).
        logits: (C, h, W) of any floating type.
        label: (h, W) class indices or ``ignore_index``.
        maps: (h, W) per-pixel scores named in ``scores`` beyond
            :data:`BUILTIN_SCORES`.
        ood: (h, W), nonzero at out-of-distribution pixels, or None.
        aleatoric: (h, W) true label entropy, or None.
        scores: the score names.
        patch_size: side of the PAvPU patches; ``h`` is a multiple of it
            except in an image's last stripe.

    Adds: ``n_valid``, ``nll_sum``, ``brier_sum`` (float64 scalars); ``ece``
    (3, num_ece_bins: wrong, right, confidence sum, equal confidence bins) and
    ``ece_fine`` (the same over the :func:`score_bins` of 1 − max p);
    ``classwise`` (3, C, bins, see :func:`classwise_histogram`); per score s:
    ``score_sum/s``; and, one row per score, two-row histograms (positives
    first) ``mis`` (wrong pixels), ``patch`` (inaccurate patches), ``ood``
    (OOD against valid in-distribution pixels) and ``aleatoric`` (ambiguous
    against clean, in-distribution), which :func:`per_score_histograms`
    splits per score once the image's last stripe is in.
    """
    C, h, w = logits.shape
    valid = label != ignore_index
    ood = None if ood is None else ood.bool()
    flat_valid = valid.reshape(-1)
    all_valid = bool(flat_valid.all())
    y = label if all_valid else torch.where(valid, label, 0)
    px = pixel_statistics(logits.reshape(C, -1), y.reshape(-1),
                          with_entropy='entropy' in scores)

    def kept(value: Tensor) -> Tensor:  # the valid pixels' values
        value = value.reshape(-1)
        return value if all_valid else value[flat_valid]

    _add(into, 'n_valid', torch.count_nonzero(flat_valid).double())
    _add(into, 'nll_sum', -kept(px.log_p_true).sum(dtype=torch.float64))
    _add(into, 'brier_sum', kept(px.brier).sum(dtype=torch.float64))
    confidence, correct = kept(px.confidence), kept(px.correct)
    add_calibration_histogram(
        _histogram(into, 'ece', (3, num_ece_bins), confidence),
        equal_bins(confidence, num_ece_bins), confidence, correct)
    add_calibration_histogram(
        _histogram(into, 'ece_fine', (3, NUM_NONNEGATIVE_BINS), confidence),
        score_bins(kept(px.max_prob), signed=False), confidence, correct)
    prob = px.prob if all_valid else px.prob[:, flat_valid]
    _add(into, 'classwise', classwise_histogram(prob, kept(y), num_ece_bins,
                                                kept(px.p_true)))

    # patches: counts of valid pixels once, then the sums of each quantity
    patch_count = patch_sums(valid, patch_size)
    all_patches = all_valid or bool((patch_count > 0).all())
    patch_valid = patch_count > 0

    def kept_patches(value: Tensor) -> Tensor:  # the patches with a valid pixel
        return value.reshape(-1) if all_patches else value[patch_valid]

    # accurate: at least half the valid pixels right (sums of 0/1: exact)
    right = px.correct.view(h, w) if all_valid else px.correct.view(h, w) & valid
    inaccurate_patch = kept_patches(2 * patch_sums(right, patch_size) < patch_count)
    patch_count = kept_patches(patch_count)
    in_distribution = valid if ood is None else valid & ~ood
    builtin = dict(max_prob=px.max_prob, entropy=px.entropy)
    # the scores in float32 (the bins' precision), float64 when a map is (its
    # sums stay exact); a float16 or integer map is widened, never the others
    # narrowed
    values = [maps[name].reshape(-1) if name in maps else builtin[name]
              for name in scores]
    dtype = (torch.float64 if any(v.dtype == torch.float64 for v in values)
             else torch.float32)
    values = [v.to(dtype) for v in values]
    # one score's map after another for the sums and the patch sums (a third
    # faster than side by side)
    by_score = torch.stack(values)
    sums = (by_score if all_valid else by_score[:, flat_valid]).double().sum(1)
    for name, total in zip(scores, sums):
        _add(into, f'score_sum/{name}', total)
    # the scores side by side, a pixel's S scores in a row (the order
    # _add_score_histograms needs), each step below once for all
    by_pixel = torch.stack(values, dim=1)
    _add_score_histograms(into, 'mis', by_pixel if all_valid else by_pixel[flat_valid],
                          ~correct)
    by_score = by_score.view(-1, h, w)
    patch_score = patch_sums(by_score if all_valid else by_score * valid, patch_size)
    patch_score = (patch_score.flatten(1) if all_patches
                   else patch_score[:, patch_valid]) / patch_count
    _add_score_histograms(into, 'patch', patch_score.T.contiguous(), inaccurate_patch)
    if ood is not None:
        scored = (ood | in_distribution).reshape(-1)
        _add_score_histograms(into, 'ood', by_pixel[scored], ood.reshape(-1)[scored])
    if aleatoric is not None:
        clean = in_distribution.reshape(-1)
        _add_score_histograms(into, 'aleatoric', by_pixel[clean],
                              ~(aleatoric.reshape(-1)[clean] <= 0))


def binary_curve_metrics(pos: Tensor, neg: Tensor,
                         tpr_level: float = 0.95) -> dict[str, float]:
    """AUROC, AUPR (average precision) and FPR at ``tpr_level`` TPR.

    ``pos``/``neg``: histograms of the score of positive and negative pixels;
    a higher score means "more likely positive". Each non-empty bin is one
    threshold, as each distinct score is in scikit-learn, taken from the
    highest down; at a threshold, the pixels of its bin and above are called
    positive.

    * AUROC: trapezoid rule over the (FPR, TPR) points from (0, 0), i.e.
      scikit-learn's ``roc_auc_score`` (a tie counts half);
    * AUPR = Σ_n (R_n − R_{n−1}) P_n from R_0 = 0 (scikit-learn's
      ``average_precision_score``, no interpolation);
    * FPR95: the FPR at the first threshold whose TPR is ≥ ``tpr_level``
      (no interpolation between thresholds).
    """
    n_pos, n_neg = pos.sum().item(), neg.sum().item()
    if n_pos == 0 or n_neg == 0:
        return dict(auroc=math.nan, aupr=math.nan, fpr95=math.nan)
    # thresholds from the highest bin down
    tp = torch.cumsum(pos.flip(0), 0)
    fp = torch.cumsum(neg.flip(0), 0)
    keep = (pos.flip(0) + neg.flip(0)) > 0
    tp, fp = tp[keep], fp[keep]
    tpr = torch.cat([tp.new_zeros(1), tp / n_pos])
    fpr = torch.cat([fp.new_zeros(1), fp / n_neg])
    auroc = torch.trapezoid(tpr, fpr).item()
    precision = tp / (tp + fp)
    aupr = torch.sum((tpr[1:] - tpr[:-1]) * precision).item()
    reached = torch.nonzero(tpr[1:] >= tpr_level - 1e-12)
    fpr95 = fpr[1:][reached[0, 0]].item()
    return dict(auroc=auroc, aupr=aupr, fpr95=fpr95)


def _harmonic(n: Tensor) -> Tensor:
    """H_n = sum_{j<=n} 1/j for real n >= 0 (digamma form)."""
    return torch.special.digamma(n + 1.0) + 0.5772156649015329


def risk_coverage(wrong: Tensor, right: Tensor) -> dict[str, float]:
    """AURC and E-AURC from histograms of the score of wrong and right pixels.

    Pixels are kept most certain first (lowest score); AURC is the mean, over
    every coverage k/N, of the error rate among the k kept pixels. Within a
    bin the order of pixels is random, so the expected risk is used, in
    closed form: for a bin of n pixels with e errors after K kept pixels with
    E errors, sum_{j=1..n} (E + j e/n)/(K + j) = e + (E - K e/n)(H_{K+n} - H_K).
    E-AURC subtracts the AURC of a perfect ranking (errors last):
    AURC* = (1/N)(E - (N - E)(H_N - H_{N-E})).
    """
    n_bin = wrong + right
    total, errors = n_bin.sum(), wrong.sum()
    if total == 0:
        return dict(aurc=math.nan, eaurc=math.nan)
    keep = n_bin > 0
    n_bin, e_bin = n_bin[keep], wrong[keep]
    k_before = torch.cumsum(n_bin, 0) - n_bin
    e_before = torch.cumsum(e_bin, 0) - e_bin
    rate = e_bin / n_bin
    risk_sum = e_bin + (e_before - k_before * rate) * (
        _harmonic(k_before + n_bin) - _harmonic(k_before))
    aurc = (risk_sum.sum() / total).item()
    optimal = (errors - (total - errors) * (_harmonic(total) - _harmonic(
        total - errors))) / total
    return dict(aurc=aurc, eaurc=aurc - optimal.item())


def pavpu(accurate: Tensor, inaccurate: Tensor,
          threshold_bin: int) -> dict[str, float]:
    """PAvPU, p(accurate | certain) and p(uncertain | inaccurate).

    Histograms of the score of accurate and inaccurate pixels (or patches);
    a pixel is uncertain when its score lies in a bin above ``threshold_bin``.
    PAvPU = (n_ac + n_iu) / (n_ac + n_au + n_ic + n_iu).
    """
    n_ac = accurate[:threshold_bin + 1].sum()
    n_au = accurate[threshold_bin + 1:].sum()
    n_ic = inaccurate[:threshold_bin + 1].sum()
    n_iu = inaccurate[threshold_bin + 1:].sum()
    total = n_ac + n_au + n_ic + n_iu

    def ratio(a: Tensor, b: Tensor) -> float:
        return (a / b).item() if b > 0 else math.nan

    return dict(pavpu=ratio(n_ac + n_iu, total),
                p_accurate_certain=ratio(n_ac, n_ac + n_ic),
                p_uncertain_inaccurate=ratio(n_iu, n_ic + n_iu))


def calibration_errors(count: Tensor, conf_sum: Tensor,
                       correct_sum: Tensor) -> tuple[float, float]:
    """ECE = sum_b (n_b / N) |acc_b - conf_b| and MCE = max_b |acc_b - conf_b|
    over non-empty bins, from per-bin sums."""
    total = count.sum()
    if total == 0:
        return math.nan, math.nan
    filled = count > 0
    gap = (correct_sum[filled] - conf_sum[filled]).abs() / count[filled]
    ece = ((count[filled] / total) * gap).sum().item()
    return ece, gap.max().item()


def adaptive_calibration_error(count: Tensor, conf_sum: Tensor,
                               correct_sum: Tensor, num_bins: int) -> float:
    """Equal-mass ECE: fine bins grouped into ``num_bins`` groups of about
    equal pixel count, then the ECE of the groups.

    A fine bin (the metric's are the :func:`score_bins` of 1 − max p, i.e.
    confidence to 1 part in 2**10 of its distance from 1) goes whole to the
    group in which its middle pixel falls, counting in bin order: group edges
    fall on fine-bin edges, so a group is never split inside a bin, and a bin
    holding more than 1/num_bins of the pixels makes its group larger.
    """
    total = count.sum()
    if total == 0:
        return math.nan
    cum = torch.cumsum(count, 0)
    group = torch.clamp((((cum - count / 2) / total) * num_bins).long(), 0,
                        num_bins - 1)
    n = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, group, count)
    c = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, group, conf_sum)
    a = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, group, correct_sum)
    return calibration_errors(n, c, a)[0]


def patch_sums(values: Tensor, patch: int) -> Tensor:
    """Float64 sums of ``values`` (..., h, w) over each patch×patch patch;
    the last row and column of patches may be partial (zero padding)."""
    *lead, h, w = values.shape
    ph, pw = -(-h // patch), -(-w // patch)
    values = values.double()
    if (ph * patch, pw * patch) != (h, w):
        values = torch.nn.functional.pad(values, (0, pw * patch - w, 0, ph * patch - h))
    # the row within a patch, then the patch rows: 1.7x faster than one
    # reduction over both strided dimensions
    return values.view(*lead, ph, patch, pw, patch).sum(-1).sum(-2)
