"""Text generation: embedded llama.cpp or an Ollama server behind one HTTP API."""
