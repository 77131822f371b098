"""voice-demo: the whole voice stack as local processes, for a first real turn."""
