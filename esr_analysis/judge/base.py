"""The judge interface: :class:`Judge`, which turns grade requests into grades.

The data it works on (:class:`~esr_analysis.judge.types.GradeRequest`,
:class:`~esr_analysis.judge.types.Grade`, ...) and the judge errors live in :mod:`esr_analysis.judge.types`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from esr_analysis.judge.types import Grade, GradeRequest

if TYPE_CHECKING:
    from esr_analysis.judge.runner import GradingReport


class Judge(ABC):
    """A judge turns :class:`GradeRequest` items into :class:`Grade` objects.

    Subclasses set ``judge_id`` (stable, key-free identity, e.g. ``"anthropic:claude-haiku-4-5-20251001"``)
    and ``rubric_hash`` (sha256 of the exact grading instructions), and implement :meth:`grade_one`.

    * ``uses_api``: each :meth:`grade_one` costs an API call (counted against a run's budget).
    * ``supports_batch``: :meth:`grade_batch` is cheaper than many :meth:`grade_one` (offline judge).
    * ``cache_id``: the identity under which raw grades are cached. It differs from ``judge_id`` only when
      :meth:`finalize` post-processes grades (restart gating), so gated and ungated runs share API calls.
    * ``item_deadline_s``: an upper bound on one :meth:`grade_one` call including the SDK's retries.
    """

    judge_id: str
    rubric_hash: str
    uses_api: bool = True
    supports_batch: bool = False
    default_concurrency: int = 16
    item_deadline_s: float | None = None

    @property
    def cache_id(self) -> str:
        """Identity used in the grade cache key (see the class docstring)."""
        return self.judge_id

    @abstractmethod
    async def grade_one(self, request: GradeRequest) -> Grade:
        """Grade one request. Per-item failures come back as a grade with ``error``; only
        :class:`JudgeFatalError` and :class:`TransientJudgeError` are raised."""

    async def grade_batch(self, requests: Sequence[GradeRequest]) -> list[Grade]:
        """Grade several requests at once (default: one by one)."""
        return [await self.grade_one(r) for r in requests]

    def finalize(self, grade: Grade, request: GradeRequest) -> Grade:
        """Post-process a raw (possibly cached) grade; the default returns it unchanged."""
        return grade

    async def aclose(self) -> None:
        """Release network clients bound to the current event loop (a no-op by default)."""
        return None

    async def grade(self, items: Sequence[GradeRequest], **run_options: Any) -> list[Grade]:
        """Grade ``items`` with the async runner (:func:`esr_analysis.judge.runner.grade_async`);
        ``run_options`` are passed through (``cache``, ``concurrency``, ``max_calls``, ``progress``...)."""
        report = await self.grade_report(items, **run_options)
        return report.grades

    async def grade_report(self, items: Sequence[GradeRequest], **run_options: Any) -> GradingReport:
        """Like :meth:`grade`, also returning the run statistics."""
        from esr_analysis.judge.runner import grade_async

        return await grade_async(self, items, **run_options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(judge_id={self.judge_id!r})"
