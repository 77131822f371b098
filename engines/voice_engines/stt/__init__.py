"""Speech to text: whisper.cpp (pywhispercpp) or faster-whisper behind one HTTP API."""
