from __future__ import annotations

from voice_engines.common.server import serve
from voice_engines.llm.app import create_app
from voice_engines.llm.settings import LlmEngineSettings


def main() -> None:
    settings = LlmEngineSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
