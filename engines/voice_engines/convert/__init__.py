"""Model format converters: faster-whisper (CTranslate2) Whisper models to whisper.cpp."""
