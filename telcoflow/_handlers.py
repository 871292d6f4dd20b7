"""Event-handler registries shared by the client and the call facades.

Handlers may be sync or async and take zero arguments or one (the event's payload); how to call a
handler is decided once, when it is registered, not on every event.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar, overload

import attrs

__all__ = ["H", "Handler", "HandlerRegistry"]

Handler = Callable[..., Any]
#: A handler's own type: ``on()`` returns it unchanged, so a decorated function keeps its type.
H = TypeVar("H", bound=Handler)

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _takes_payload(handler: Handler) -> bool:
    """Whether ``handler`` takes the payload; ``ValueError`` if it cannot take 0 or 1 argument."""
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):  # some builtins have no signature: give them the payload
        return True
    params = list(signature.parameters.values())
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in _POSITIONAL]
    required = [p for p in positional if p.default is inspect.Parameter.empty]
    required_kw = [
        p
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
    ]
    if len(required) > 1 or required_kw:
        raise ValueError(
            f"event handler {getattr(handler, '__qualname__', handler)!r} must take zero "
            f"arguments or one (the event payload)"
        )
    return bool(positional)


@attrs.frozen
class _Registered:
    handler: Handler
    takes_payload: bool

    async def __call__(self, payload: Any) -> None:
        result = self.handler(payload) if self.takes_payload else self.handler()
        if inspect.isawaitable(result):
            await result


class HandlerRegistry:
    """Handlers by event name; only the names given at construction may be registered."""

    def __init__(self, names: Iterable[str], owner: str) -> None:
        self._handlers: dict[str, list[_Registered]] = {name: [] for name in names}
        self._owner = owner

    def normalise(self, event: str) -> str:
        """The event's canonical name (enums are accepted); ``ValueError`` for an unknown one."""
        name = str(event.value if hasattr(event, "value") else event)
        if name not in self._handlers:
            known = ", ".join(sorted(self._handlers))
            raise ValueError(f"unknown {self._owner} event {name!r}; known events: {known}")
        return name

    @overload
    def on(self, event: str, handler: None = None) -> Callable[[H], H]: ...
    @overload
    def on(self, event: str, handler: H) -> H: ...
    def on(self, event: str, handler: H | None = None) -> H | Callable[[H], H]:
        """Register ``handler`` for ``event``; without a handler, return a decorator."""
        name = self.normalise(event)

        def register(fn: H) -> H:
            given: object = fn  # callers without type checking may pass anything
            if not callable(given):
                raise TypeError(f"event handler must be callable, not {type(given).__name__}")
            self._handlers[name].append(_Registered(fn, _takes_payload(fn)))
            return fn

        if handler is None:
            return register
        return register(handler)

    def handlers(self, event: str) -> list[_Registered]:
        """The handlers for ``event`` in registration order (a copy: safe to iterate)."""
        return list(self._handlers[event])

    async def fire(
        self,
        event: str,
        payload: Any,
        logger: logging.Logger,
        context: str,
        on_error: Callable[[Exception], Awaitable[bool]] | None = None,
    ) -> None:
        """Run every handler for ``event`` in order; one that raises is logged, not propagated.

        ``on_error`` (if given) is told first; when it returns True it has dealt with the error
        (logged it its own way), else the error is logged here with its traceback."""
        for registered in self.handlers(event):
            try:
                await registered(payload)
            except Exception as exc:
                if on_error is not None and await on_error(exc):
                    continue
                logger.exception("%s: handler for %s raised", context, event)
