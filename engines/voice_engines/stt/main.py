from __future__ import annotations

from voice_engines.common.server import serve
from voice_engines.stt.app import create_app
from voice_engines.stt.settings import SttEngineSettings


def main() -> None:
    settings = SttEngineSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
