"""FastAPI services the operator deploys: STT, LLM, TTS engines and the voice gateway."""
