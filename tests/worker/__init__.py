"""Worker service tests: real subprocesses, real HTTP, real llama.cpp on the tiny model."""
