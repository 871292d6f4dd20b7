"""Tools the model may call: ``@tool`` turns a typed function into a JSON schema and a runner.

A tool's parameters come from its signature (``str``, ``int``, ``float``, ``bool``, ``list[T]``,
``dict``, ``Literal[...]``, ``T | None``, ``Annotated[T, "description"]``); its description is
the docstring's first paragraph. A parameter annotated :class:`~telcoflow.ActiveCall` is given
the call and is not shown to the model. Coroutine functions run in their own task; plain
functions run in a worker thread, so a slow lookup never stalls the call's audio. Every
outcome becomes a result the model can read: a return value, ``{"error": ...}`` for an
exception, an unknown name or a timeout. Nothing a tool does ends the bridge.

``end_call`` and ``transfer`` are tools the bridge itself carries out once the model's
farewell has been heard (see :func:`telcoflow.bridge.bridge`).
"""

from __future__ import annotations

import inspect
import logging
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin, overload

import anyio
import anyio.to_thread

from ..call import ActiveCall
from ._adapter import ToolSpec

__all__ = ["Tool", "end_call", "json_schema", "run_tool", "tool", "transfer"]

logger = logging.getLogger("telcoflow_sdk.bridge")

DEFAULT_TOOL_TIMEOUT = 10.0

_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _schema(tp: Any, where: str) -> dict[str, Any]:
    origin = get_origin(tp)
    if origin is typing.Annotated:
        inner, *meta = get_args(tp)
        schema = _schema(inner, where)
        notes = [m for m in meta if isinstance(m, str)]
        if notes:
            schema["description"] = " ".join(notes)
        return schema
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    if origin is Literal:
        values = list(get_args(tp))
        kinds = {_SCALARS.get(type(v)) for v in values}
        out: dict[str, Any] = {"enum": values}
        if len(kinds) == 1 and None not in kinds:
            out["type"] = kinds.pop()
        return out
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple):
        args = get_args(tp)
        schema = {"type": "array"}
        if args and args[0] is not Ellipsis:
            schema["items"] = _schema(args[0], where)
        return schema
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return {"type": "object"}
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        if len(options) == 1:
            return _schema(options[0], where)
        return {"anyOf": [_schema(a, where) for a in options]}
    raise TypeError(f"{where}: no JSON schema for the type {tp!r}")


def _is_call(tp: Any) -> bool:
    return tp is ActiveCall or (isinstance(tp, type) and issubclass(tp, ActiveCall))


def json_schema(fn: Callable[..., Any]) -> tuple[dict[str, Any], str | None]:
    """The ``object`` schema of ``fn``'s parameters, and the name of its call parameter."""
    hints = typing.get_type_hints(fn, include_extras=True)
    props: dict[str, Any] = {}
    required: list[str] = []
    call_param = None
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool {fn.__name__}: *args and **kwargs cannot be described")
        if name not in hints:
            raise TypeError(f"tool {fn.__name__}: parameter {name!r} needs a type hint")
        if _is_call(hints[name]):
            call_param = name
            continue
        props[name] = _schema(hints[name], f"tool {fn.__name__}, parameter {name!r}")
        if param.default is inspect.Parameter.empty:
            required.append(name)
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    return schema, call_param


@dataclass(frozen=True)
class Tool:
    """A function the model may call (make one with :func:`tool`)."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    fn: Callable[..., Any] | None
    timeout: float = DEFAULT_TOOL_TIMEOUT
    call_param: str | None = None
    #: "end_call" or "transfer" for the bridge's own tools.
    builtin: str | None = field(default=None, compare=False)

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters)


def _describe(fn: Callable[..., Any]) -> str:
    doc = inspect.getdoc(fn) or ""
    return doc.split("\n\n", 1)[0].replace("\n", " ").strip()


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    *, name: str | None = None, description: str | None = None, timeout: float = ...
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float = DEFAULT_TOOL_TIMEOUT,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a :class:`Tool` of a typed function: ``@tool`` or ``@tool(timeout=3)``."""

    def make(f: Callable[..., Any]) -> Tool:
        if timeout <= 0:
            raise ValueError(f"tool {f.__name__}: timeout must be positive, not {timeout!r}")
        parameters, call_param = json_schema(f)
        return Tool(
            name or f.__name__,
            description if description is not None else _describe(f),
            parameters,
            f,
            timeout,
            call_param,
        )

    return make if fn is None else make(fn)


end_call = Tool(
    "end_call",
    "Hang up the call. Say goodbye first: the call ends once your farewell has been heard.",
    {
        "type": "object",
        "properties": {"reason": {"type": "string", "description": "Why the call ends."}},
    },
    None,
    builtin="end_call",
)

transfer = Tool(
    "transfer",
    "Transfer the caller to a human. Tell the caller first: the transfer starts once that "
    "has been heard.",
    {
        "type": "object",
        "properties": {"reason": {"type": "string", "description": "Why a human is needed."}},
    },
    None,
    builtin="transfer",
)


async def run_tool(
    t: Tool | None, name: str, arguments: Mapping[str, Any], call: ActiveCall
) -> Any:
    """Run one call of a tool; always returns a result (see the module docstring)."""
    if t is None:
        return {"error": f"unknown tool {name!r}"}
    if t.fn is None:  # a builtin: the bridge acts on it
        return {"status": "ok"}
    kwargs = dict(arguments)
    if t.call_param is not None:
        kwargs[t.call_param] = call
    try:
        inspect.signature(t.fn).bind(**kwargs)
    except TypeError as exc:
        logger.warning("call %s: tool %s called with bad arguments: %s", call.call_id, name, exc)
        return {"error": f"bad arguments for {name!r}: {exc}"}
    fn = t.fn
    try:
        with anyio.fail_after(t.timeout):
            if inspect.iscoroutinefunction(fn):
                value = await fn(**kwargs)
            else:
                value = await anyio.to_thread.run_sync(lambda: fn(**kwargs), abandon_on_cancel=True)
    except TimeoutError:
        logger.warning("call %s: tool %s timed out after %g s", call.call_id, name, t.timeout)
        return {"error": f"tool {name!r} timed out after {t.timeout:g} s"}
    except Exception as exc:
        logger.exception("call %s: tool %s raised", call.call_id, name)
        return {"error": f"{type(exc).__name__}: {exc}"}
    return value if isinstance(value, Mapping) else {"result": value}
