from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

Message = dict[str, str]


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int
    temperature: float
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str  # "stop" or "length", as OpenAI says it


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed completion; the last one has finish_reason and the counts."""

    text: str
    finish_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0


class ChatBackend(Protocol):
    def complete(self, messages: list[Message], params: GenerationParams) -> Completion: ...

    def stream(self, messages: list[Message], params: GenerationParams) -> Iterator[Delta]: ...
