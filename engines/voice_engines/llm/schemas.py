"""Request bodies of the LLM service (the OpenAI one follows OpenAI's field names)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    stop: list[str] = Field(default_factory=list, max_length=4)
    seed: int | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str
    # Omit to start a conversation; the reply carries the id to continue it with.
    session_id: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[\w.:\-]+$")
    max_tokens: int | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    seed: int | None = None


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's body; fields this engine does not use are ignored, as OpenAI adds some."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[OpenAIMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1)
    seed: int | None = None
