"""The async client's batch API: many fetches, a bounded number at a time (private; a base of
:class:`parallel_tasks.client.AsyncParallelClient`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING

from parallel_tasks.models import FetchResult
from parallel_tasks.settings import DEFAULT_CONCURRENCY, MAX_CONCURRENCY


class BatchFetching:
    """``iter_task_run_inputs`` and ``get_task_run_inputs`` over the client's own ``fetch``."""

    if TYPE_CHECKING:  # the client's own, found after this class

        async def fetch(self, run_id: str, *, quiet: bool = False) -> FetchResult: ...

        def _unexpected(self, run_id: str, error: Exception) -> FetchResult: ...

    async def iter_task_run_inputs(
        self, run_ids: Iterable[str], *, concurrency: int = DEFAULT_CONCURRENCY, quiet: bool = True
    ) -> AsyncIterator[FetchResult]:
        """Fetch many inputs, at most ``concurrency`` (1 to :data:`MAX_CONCURRENCY`) at a time, yielding each
        outcome as it completes.

        Run ids are drawn from ``run_ids`` lazily, so memory stays bounded by ``concurrency`` however
        many there are. A failure is a :class:`FetchResult` with ``error`` set; it never stops the others.
        """
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"concurrency must be between 1 and {MAX_CONCURRENCY}, got {concurrency}")
        # ``concurrency`` workers share one iterator of ids and hand their outcomes over a bounded queue:
        # constant work per run (waiting on a set of tasks costs in proportion to its size, per run).
        pending_ids = iter(run_ids)
        outcomes: asyncio.Queue[FetchResult | Exception | None] = asyncio.Queue(maxsize=concurrency)

        async def work() -> None:
            try:
                for run_id in pending_ids:
                    try:
                        result = await self.fetch(run_id, quiet=quiet)
                    except Exception as error:  # a bug, not a failed fetch: it costs this run only
                        result = self._unexpected(run_id, error)
                    await outcomes.put(result)
            except Exception as error:  # the run ids' iterable itself failed: surface it
                await outcomes.put(error)
            await outcomes.put(None)

        workers = [asyncio.ensure_future(work()) for _ in range(concurrency)]
        try:
            finished = 0
            while finished < concurrency:
                outcome = await outcomes.get()
                if outcome is None:
                    finished += 1
                elif isinstance(outcome, Exception):
                    raise outcome
                else:
                    yield outcome
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def get_task_run_inputs(
        self, run_ids: Iterable[str], *, concurrency: int = DEFAULT_CONCURRENCY
    ) -> list[FetchResult]:
        """Fetch many inputs concurrently; the outcomes come back in the order of ``run_ids``."""
        ids = list(run_ids)
        by_position: dict[int, FetchResult] = {}
        positions: dict[str, list[int]] = {}
        for position, run_id in enumerate(ids):
            positions.setdefault(str(run_id), []).append(position)
        async for result in self.iter_task_run_inputs(ids, concurrency=concurrency):
            by_position[positions[result.run_id].pop(0)] = result
        return [by_position[i] for i in range(len(ids))]
