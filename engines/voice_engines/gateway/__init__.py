"""The gateway: runs a conversation turn (speech to text, the language model, text to
speech), each stage routed by the operator's routes file to an internal engine or an
external vendor."""
