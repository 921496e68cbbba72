"""Micro-batching: concurrent requests share one forward pass.

A forward pass of a small CNN costs nearly the same for 1 image as for 16 on CPU (and far less per
image on GPU), so requests that arrive within a few milliseconds of each other are concatenated and
run together. A worker thread runs the compiled function; the event loop keeps accepting and
decoding requests meanwhile, so the next batch fills while the current one computes. With
``workers`` > 1, up to that many passes run at once, each on its own thread: for small models with
TensorFlow's intra-op pool at one thread the ops run inline in the calling thread, so two passes use
two cores at half the CPU per pass of one pass spread over both (measured, issue 19).

Callers that `announce` a request when it arrives (before decoding it) let the batcher wait only
for requests that are actually on their way: with nothing announced and the queue empty, a batch runs
at once instead of idling for ``max_wait_ms`` (a lone request pays no batching delay, and at
saturation no pass waits for a request that is not coming).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)


class MicroBatcher:
    """Gather (n,S,S,1) arrays from concurrent callers into batches of up to ``max_batch_size``.

    Args:
        infer: compiled function mapping an (N,S,S,1) float32 array to (N,) probabilities.
        max_batch_size: most images per forward pass (a single larger request runs alone).
        max_wait_ms: after the first queued request, how long to wait for more before running.
            0 runs whatever is queued at once (still batching requests that queued during the
            previous pass).
        workers: most passes running at once (each on its own thread). A batch is collected only
            once a worker is free, so the queue fills while all are busy.
    """

    def __init__(
        self,
        infer: Callable[[np.ndarray], np.ndarray],
        max_batch_size: int = 32,
        max_wait_ms: float = 2.0,
        workers: int = 1,
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.infer = infer
        self.workers = workers
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        # A plain deque plus one wake-up future: asyncio.Queue.get under asyncio.wait_for costs a
        # Task and a timer per wait, which showed in the per-request profile at concurrency 8.
        self._queue: collections.deque[tuple[np.ndarray, asyncio.Future]] = collections.deque()
        self._wake: asyncio.Future | None = None
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="mammo-infer")
        self._free: asyncio.Semaphore | None = None  # free workers, made on the worker's loop
        self._passes: set[asyncio.Task] = set()
        self.batches = 0
        self.images = 0
        self._announcing = False  # set by the first announce(): waits then follow the announced count
        self._expected = 0

    def announce(self) -> None:
        """Say a request has arrived and will `submit` soon (or `withdraw` if it fails to decode)."""
        self._announcing = True
        self._expected += 1

    def withdraw(self) -> None:
        """An announced request will not be submitted after all (e.g. its input was invalid)."""
        self._expected = max(0, self._expected - 1)
        if self._expected == 0:
            self._notify()  # a batch waiting for it can run now

    async def submit(self, batch: np.ndarray, announced: bool = False) -> np.ndarray:
        """Queue ``batch`` (n,S,S,1) and return its (n,) probabilities once its pass has run.

        Args:
            batch: the request's images.
            announced: the caller called `announce` for this request earlier.
        """
        self._ensure_worker()
        if announced:
            self._expected = max(0, self._expected - 1)
        fut = self._loop.create_future()
        self._queue.append((batch, fut))
        self._notify()
        return await fut

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _ensure_worker(self) -> None:
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._loop is not loop:
            self._loop = loop
            self._queue.clear()
            self._wake = None
            self._free = asyncio.Semaphore(self.workers)
            self._worker = loop.create_task(self._run(), name="mammo-batcher")

    async def _wait(self, timeout: float | None) -> None:
        """Sleep until a request is queued or withdrawn, or ``timeout`` seconds pass (None: no limit)."""
        self._wake = self._loop.create_future()
        timer = None if timeout is None else self._loop.call_later(timeout, self._notify)
        try:
            await self._wake
        finally:
            self._wake = None
            if timer is not None:
                timer.cancel()

    async def _collect(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        while not self._queue:
            await self._wait(None)
        first = self._queue.popleft()
        items, size = [first], len(first[0])
        deadline = time.monotonic() + self.max_wait_s
        while size < self.max_batch_size:
            if not self._queue:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self._announcing and self._expected == 0):
                    break
                await self._wait(remaining)
                continue
            if size + len(self._queue[0][0]) > self.max_batch_size:
                break  # does not fit: it leads the next batch instead of being split across two
            nxt = self._queue.popleft()
            items.append(nxt)
            size += len(nxt[0])
        return items

    async def _run(self) -> None:
        while True:
            await self._free.acquire()  # collect only once a worker can take the batch
            items = await self._collect()
            live = [(x, f) for x, f in items if not f.done()]  # a caller may have gone away
            if not live:
                self._free.release()
                continue
            task = self._loop.create_task(self._pass(live))
            self._passes.add(task)  # held until done: the loop keeps only weak references
            task.add_done_callback(self._passes.discard)

    async def _pass(self, live: list[tuple[np.ndarray, asyncio.Future]]) -> None:
        try:
            x = live[0][0] if len(live) == 1 else np.concatenate([x for x, _ in live])
            probs = await self._loop.run_in_executor(self._executor, self.infer, x)
        except Exception as exc:  # noqa: BLE001  (each caller gets the error; the worker lives on)
            log.exception("inference failed for a batch of %d request(s)", len(live))
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(exc)
            return
        finally:
            self._free.release()
        self.batches += 1
        self.images += len(x)
        if self.batches % 1000 == 0:
            log.info(
                "batcher: %d passes, %d images (%.1f per pass)",
                self.batches,
                self.images,
                self.images / self.batches,
            )
        start = 0
        for xi, fut in live:
            if not fut.done():
                fut.set_result(probs[start : start + len(xi)])
            start += len(xi)

    def close(self) -> None:
        """Stop the worker and its thread (pending callers are cancelled)."""
        if self._worker is not None:
            self._worker.cancel()
        for task in list(self._passes):
            task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
