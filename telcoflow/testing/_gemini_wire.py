"""The Gemini Live wire, sans I/O: the endpoint, key spellings, mime rates, base64 and the
setup record. Pure functions on whole JSON messages, shared by the stand-in and its tests.

Invariant: :func:`camelize` re-spells protocol keys only; the user's own names (function
arguments and responses, JSON schemas: :data:`OPAQUE_FIELDS`) are kept as sent.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "API_PATH",
    "DEFAULT_INPUT_RATE",
    "OPAQUE_FIELDS",
    "POLICY_CLOSE",
    "GeminiSetup",
    "camelize",
    "decode_base64",
    "duration",
    "mime_rate",
    "parse_target",
    "read_setup",
    "to_camel",
]

#: The Developer API's Live endpoint, for every API version the client may be set to.
API_PATH = re.compile(
    r"^/ws/google\.ai\.generativelanguage\.(v1|v1beta|v1alpha)\.GenerativeService\."
    r"(BidiGenerateContent|BidiGenerateContentConstrained)$"
)

#: The input rate Gemini assumes when a mime type names none (its native rate).
DEFAULT_INPUT_RATE = 16000

#: Fields whose values are the user's own data (function arguments and results, JSON
#: schemas): their keys are names the user chose and are never re-spelled.
OPAQUE_FIELDS = frozenset(
    {"args", "response", "parameters", "parametersJsonSchema", "responseJsonSchema"}
)

#: Close code and reason for a bad key or handle (the real server's policy-violation close).
POLICY_CLOSE = 1008


def to_camel(name: str) -> str:
    """``mime_type`` -> ``mimeType``; a camelCase name is returned unchanged."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def camelize(value: Any) -> Any:
    """``value`` with every key of every nested dict in camelCase, except inside
    :data:`OPAQUE_FIELDS` (the user's own names)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = to_camel(key) if isinstance(key, str) else key
            out[name] = item if name in OPAQUE_FIELDS else camelize(item)
        return out
    if isinstance(value, list):
        return [camelize(item) for item in value]
    return value


def mime_rate(mime_type: str | None, default: int = DEFAULT_INPUT_RATE) -> int:
    """The ``rate=`` parameter of an ``audio/pcm;rate=N`` mime type, else ``default``."""
    for param in (mime_type or "").split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "rate" and value.strip().isdigit():
            return int(value.strip())
    return default


def decode_base64(data: str) -> bytes:
    """Standard or URL-safe base64, padded or not (google-genai sends URL-safe; proto JSON
    accepts both). ``binascii.Error`` if it is neither."""
    text = data.replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def parse_target(target: str) -> tuple[str, str, dict[str, str]] | None:
    """``(api_version, method, query)`` of a Live request target, or None for another path."""
    parts = urlsplit(target)
    match = API_PATH.match(parts.path)
    if match is None:
        return None
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return match.group(1), match.group(2), query


@dataclass(frozen=True)
class GeminiSetup:
    """What a client asked for in its ``setup`` message (camelCase ``raw`` kept whole)."""

    model: str
    modalities: tuple[str, ...]
    voice: str | None
    system_instruction: str | None
    #: Names of the function declarations offered, in order.
    tools: tuple[str, ...]
    function_declarations: tuple[Mapping[str, Any], ...]
    input_transcription: bool
    output_transcription: bool
    realtime_input_config: Mapping[str, Any] | None
    #: Whether the client asked for resumption updates (``sessionResumption`` present).
    resumption: bool
    resumption_handle: str | None
    context_window_compression: Mapping[str, Any] | None
    raw: Mapping[str, Any]


def _text_of(content: Any) -> str | None:
    """The text parts of a ``Content`` (or a bare string) joined, or None."""
    if isinstance(content, str):
        return content
    if not isinstance(content, dict):
        return None
    texts = [p["text"] for p in content.get("parts", []) if isinstance(p, dict) and "text" in p]
    return "".join(texts) if texts else None


def read_setup(setup: Mapping[str, Any]) -> GeminiSetup:
    """The record of a camelCase ``setup`` message body."""
    generation = setup.get("generationConfig") or {}
    voice = (
        (generation.get("speechConfig") or setup.get("speechConfig") or {})
        .get("voiceConfig", {})
        .get("prebuiltVoiceConfig", {})
        .get("voiceName")
    )
    declarations: list[Mapping[str, Any]] = []
    for tool in setup.get("tools") or []:
        declarations.extend(tool.get("functionDeclarations") or [])
    resumption = setup.get("sessionResumption")
    return GeminiSetup(
        model=str(setup.get("model", "")),
        modalities=tuple(generation.get("responseModalities") or ()),
        voice=voice,
        system_instruction=_text_of(setup.get("systemInstruction")),
        tools=tuple(str(d.get("name")) for d in declarations),
        function_declarations=tuple(declarations),
        input_transcription="inputAudioTranscription" in setup,
        output_transcription="outputAudioTranscription" in setup,
        realtime_input_config=setup.get("realtimeInputConfig"),
        resumption=resumption is not None,
        resumption_handle=(resumption or {}).get("handle"),
        context_window_compression=setup.get("contextWindowCompression"),
        raw=setup,
    )


def duration(seconds: float) -> str:
    """A protobuf Duration in JSON (``"1.5s"``)."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
