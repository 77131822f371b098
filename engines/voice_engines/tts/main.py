from __future__ import annotations

from voice_engines.common.server import serve
from voice_engines.tts.app import create_app
from voice_engines.tts.settings import TtsEngineSettings


def main() -> None:
    settings = TtsEngineSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
