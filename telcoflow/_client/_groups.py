"""Exception groups of a facade's internal tasks, made into the one exception it raises (STYLE:
no exception group leaks out of a facade)."""

from __future__ import annotations

import sys

import anyio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["unwrap"]


def unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception a facade raises for an exception group of its internal tasks."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    cancelled = anyio.get_cancelled_exc_class()
    for leaf in leaves:
        if not isinstance(leaf, cancelled):
            return leaf
    return leaves[0]
