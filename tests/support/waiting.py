"""Eventually-style waits: poll a condition until it holds or a deadline passes."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")


@overload
async def eventually(
    probe: Callable[[], Awaitable[T]], *, timeout: float, interval: float = ..., what: str = ...
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], T], *, timeout: float, interval: float = ..., what: str = ...
) -> T: ...


async def eventually(
    probe: Callable[[], object],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str = "condition",
) -> object:
    """Return the first truthy result of probe (awaited if it is a coroutine) within timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {result!r}")
        await asyncio.sleep(interval)
