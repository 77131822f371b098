"""The LLM service on SmolLM2, through embedded llama.cpp and through a real Ollama built
from its Go module."""

from __future__ import annotations

import json

import httpx
import pytest
from enginekit import EngineProcess

pytestmark = pytest.mark.engines

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module", params=["llamacpp", "ollama"])
def llm(request: pytest.FixtureRequest) -> EngineProcess:
    return request.getfixturevalue(f"llm_{request.param}")


def post(llm: EngineProcess, path: str, body: dict) -> dict:
    response = httpx.post(f"{llm.url}{path}", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def test_generate_answers_a_factual_question(llm: EngineProcess) -> None:
    result = post(llm, "/generate", {"prompt": QUESTION, "max_tokens": 32, "temperature": 0})
    assert "paris" in result["text"].lower()
    assert result["usage"]["input_tokens"] > 5
    assert 0 < result["usage"]["output_tokens"] <= 32


def test_max_tokens_bounds_the_answer(llm: EngineProcess) -> None:
    result = post(
        llm, "/generate", {"prompt": "Tell me a long story about a dragon.", "max_tokens": 5}
    )
    assert result["usage"]["output_tokens"] <= 5
    assert result["finish_reason"] == "length"


def test_chat_keeps_a_bounded_history_per_session(llm: EngineProcess) -> None:
    first = post(llm, "/chat", {"message": QUESTION, "max_tokens": 24, "temperature": 0})
    session = first["session_id"]
    assert "paris" in first["reply"].lower()
    assert first["turns"] == 1
    # The follow-up only makes sense with the first turn in the context.
    follow = post(
        llm,
        "/chat",
        {
            "session_id": session,
            "message": "Repeat your last answer word for word.",
            "max_tokens": 24,
            "temperature": 0,
        },
    )
    assert follow["session_id"] == session
    assert follow["turns"] == 2
    assert "paris" in follow["reply"].lower()
    other = post(llm, "/chat", {"message": "Hi", "max_tokens": 4})
    assert other["session_id"] != session
    assert other["turns"] == 1
    # The engine under test keeps LLM_HISTORY_TURNS (8) turns.
    for _ in range(9):
        last = post(llm, "/chat", {"session_id": session, "message": "Ok.", "max_tokens": 2})
    assert last["turns"] == 8


def test_openai_chat_completion(llm: EngineProcess) -> None:
    body = post(
        llm,
        "/v1/chat/completions",
        {
            "model": "anything",
            "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 24,
            "temperature": 0,
        },
    )
    assert body["object"] == "chat.completion"
    assert "paris" in body["choices"][0]["message"]["content"].lower()
    assert body["usage"]["total_tokens"] == (
        body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )


def test_sse_stream_yields_tokens_incrementally(llm: EngineProcess) -> None:
    events = []
    with httpx.stream(
        "POST",
        f"{llm.url}/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 24,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        timeout=120,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    content = [p for p in pieces if p]
    assert len(content) >= 3, content  # many small deltas, not one blob
    assert "paris" in "".join(content).lower()
    assert chunks[-1]["usage"]["completion_tokens"] >= len(content) - 1
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] in ("stop", "length")


def test_models(llm: EngineProcess) -> None:
    body = httpx.get(f"{llm.url}/v1/models").json()
    assert len(body["data"]) == 1
    assert body["data"][0]["id"]
