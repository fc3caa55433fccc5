"""Waiting on a cluster by polling what it shows, never by sleeping a guessed time.

Everything in a cluster is eventually consistent: a test (or the demo) asks for something, then
polls until the cluster shows it. When it never does, the failure says what was seen last, which
is usually the whole diagnosis ("phase stayed Pending").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar, overload

T = TypeVar("T")


class WaitTimeoutError(AssertionError):
    """The awaited state did not show up in time; the message carries the last observation.

    An AssertionError, so pytest reports it as a failed expectation, not as an error.
    """


def _describe(value: object, limit: int = 2000) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


@overload
def wait_for(
    predicate: Callable[[], T],
    *,
    timeout: float = ...,
    interval: float = ...,
    message: str = ...,
    until: None = ...,
    ignore: tuple[type[BaseException], ...] = ...,
) -> T: ...


@overload
def wait_for(
    predicate: Callable[[], T],
    *,
    timeout: float = ...,
    interval: float = ...,
    message: str = ...,
    until: Callable[[T], bool],
    ignore: tuple[type[BaseException], ...] = ...,
) -> T: ...


def wait_for(
    predicate: Callable[[], T],
    *,
    timeout: float = 30.0,
    interval: float = 0.25,
    message: str = "",
    until: Callable[[T], bool] | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it holds; return what it returned.

    Without ``until``, a truthy return value means done. With ``until``, ``predicate`` only
    observes (``lambda: pod().status.phase``) and ``until(value)`` decides (``lambda p: p ==
    "Running"``), so a timeout can show the last observed value. Exceptions of the ``ignore``
    types count as "not yet" (an object that does not exist yet); the last one is reported too.
    Raises :class:`WaitTimeoutError` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    observed: object = "(nothing observed)"
    while True:
        try:
            value = predicate()
        except ignore as error:
            observed = error
        else:
            if until(value) if until is not None else value:
                return value
            observed = value
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", "condition")
            raise WaitTimeoutError(f"{what}: not true after {timeout:g}s; last observed: {_describe(observed)}")
        time.sleep(interval)
