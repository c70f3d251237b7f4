"""The rbee worker: one process serving one GGUF model with N slots over HTTP (see docs/api.md)."""
