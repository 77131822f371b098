"""Text to speech: Piper voices behind one HTTP API, streaming sentence by sentence."""
