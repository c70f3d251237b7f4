"""The inference engine (llama-cpp-python): feature sets, and wheels built once per feature set."""
