"""Calls that arrive together, answered together: `Batches` queues the requests of one
event loop and hands them to a function of many requests in batches, off the loop.

A burst of handshakes (a restarted process's clients: thousands within seconds) would
otherwise cost a database round trip, and a hop to a thread, per socket. A batch is
started as soon as a request arrives and fewer than `readers` batches are being read, so
a lone request waits for nothing; the requests that arrive while batches are read go
together in the next, up to `size`. The function answers each request with its result or
with the exception that request alone raises; an exception of the whole call (the
database gone) reaches every request of the batch. Every batch is read after each of its
requests was queued. Hand-written: asgiref and Channels offer no batching of calls.
"""

from __future__ import annotations

import asyncio
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from asgiref.sync import sync_to_async
from django.db import connection

from core.tasks import background

Request = TypeVar("Request")
Answer = TypeVar("Answer")


@dataclass
class _Queue:
    waiting: list[tuple[Any, asyncio.Future]] = field(default_factory=list)
    reading: int = 0


class Batches(Generic[Request, Answer]):
    def __init__(self, call: Callable[[list[Request]], list[Answer | Exception]], *, name: str, readers: int,
                 size: int) -> None:
        self.call, self.readers, self.size = call, readers, size
        # Threads of its own, each with its database connection, given back after each batch.
        self.executor = ThreadPoolExecutor(max_workers=readers, thread_name_prefix=name)
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = weakref.WeakKeyDictionary()

    async def answer(self, request: Request) -> Answer:
        """The answer to `request`, read with the other requests of its moment."""
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(loop, _Queue())
        answer = loop.create_future()
        queue.waiting.append((request, answer))
        if queue.reading < self.readers:
            queue.reading += 1
            background(self._read(queue))  # ends when the queue is empty; awaited through the futures
        return await answer

    def _call_and_close(self, requests: list[Request]) -> list[Answer | Exception]:
        try:
            return self.call(requests)
        finally:
            # This thread's connection is not one Django closes at the end of a request:
            # given back now (to the pool on PostgreSQL), so none outlives the batch.
            connection.close()

    async def _read(self, queue: _Queue) -> None:
        read = sync_to_async(self._call_and_close, thread_sensitive=False, executor=self.executor)
        try:
            while queue.waiting:
                batch, queue.waiting = queue.waiting[: self.size], queue.waiting[self.size :]
                batch = [(request, answer) for request, answer in batch if not answer.done()]  # gone meanwhile
                if not batch:
                    continue
                try:
                    answers = await read([request for request, _ in batch])
                except Exception as error:  # the whole call failed: each request fails as it would alone
                    answers = [error] * len(batch)
                except BaseException:  # cancelled (the loop is stopping): nobody is left waiting for ever
                    for _, answer in batch:
                        answer.cancel()
                    raise
                for (_, future), answer in zip(batch, answers):
                    if future.done():
                        continue
                    if isinstance(answer, Exception):
                        future.set_exception(answer)
                    else:
                        future.set_result(answer)
        finally:
            queue.reading -= 1
