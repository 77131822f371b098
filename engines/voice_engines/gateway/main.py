from __future__ import annotations

import logging

from voice_engines.common.json_logging import configure_json_logging
from voice_engines.common.server import uvicorn_options
from voice_engines.gateway.app import create_app
from voice_engines.gateway.keys import RedactingFilter
from voice_engines.gateway.settings import GatewaySettings


def main() -> None:
    import uvicorn

    settings = GatewaySettings()
    configure_json_logging(settings.log_level)
    app = create_app(settings)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter(app.state.gateway.secrets))
    uvicorn.run(app, host=settings.host, port=settings.port, **uvicorn_options())


if __name__ == "__main__":
    main()
