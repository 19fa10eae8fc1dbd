"""Base of the metrics that reduce each sample to sums and add them up."""
from __future__ import annotations

from abc import abstractmethod
from typing import Sequence

from mmengine.dist import get_dist_info
from mmengine.evaluator import BaseMetric
from torch import Tensor


def merge_sums(into: dict[str, Tensor], other: dict[str, Tensor]) -> None:
    """Add ``other``'s sums to ``into``'s, key by key."""
    for key, value in other.items():
        if key in into:
            into[key] += value
        else:
            into[key] = value.clone()


class SummedMetric(BaseMetric):
    """A metric whose samples reduce to sums and histograms (on the CPU, of
    a fixed size) that a run adds up: memory does not grow with the data
    set, and under DDP mmengine collects one dict per rank.

    mmengine's ``DefaultSampler`` repeats samples to give every rank the
    same number; the last sample of a rank whose last position lies beyond
    the data set is such a repeat. Its sums are kept apart until the next
    sample arrives and, at ``evaluate``, dropped where it is a repeat, so a
    multi-process run gives the numbers of one process.

    A subclass gives :meth:`sample_sums` and ``compute_metrics`` over the
    merged sums (``results`` holds one dict per rank), and may add to this
    rank's sums once its last sample is in (:meth:`finish_rank`).
    """

    def __init__(self, collect_device: str = 'cpu', prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self._latest: dict[str, Tensor] | None = None

    @abstractmethod
    def sample_sums(self, sample: dict) -> dict[str, Tensor]:
        """The sums of one data sample, on the CPU."""

    def start_run(self) -> None:
        """Called before the first sample of a run: forget an earlier run."""
        self._latest = None

    def finish_rank(self) -> None:
        """Called on every rank after its last sample is folded in, before
        the ranks' sums are collected (a collective op may run here)."""

    def _fold_latest(self, keep: bool) -> None:
        """Add the latest sample's sums to this rank's totals (when
        ``keep``) and forget them."""
        if keep and self._latest is not None:
            merge_sums(self.results[0], self._latest)
        self._latest = None

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Fold the previous sample into this rank's totals, then compute the
        sums of each new one."""
        if not self.results:  # a new run: nothing of an earlier one is kept
            self.results.append({})
            self.start_run()
        for sample in data_samples:
            self._fold_latest(keep=True)
            self._latest = self.sample_sums(sample)

    def evaluate(self, size: int) -> dict:
        """Drop the sampler's repeated sample on this rank, then reduce."""
        if self.results:
            rank, world_size = get_dist_info()
            per_rank = -(-size // world_size)
            last_position = rank + (per_rank - 1) * world_size
            self._fold_latest(keep=last_position < size)
        self.finish_rank()
        return super().evaluate(size)

    @staticmethod
    def merged(results: list) -> dict[str, Tensor]:
        """The ranks' sums added up."""
        total: dict[str, Tensor] = {}
        for part in results:
            merge_sums(total, part)
        return total
