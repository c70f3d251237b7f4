"""The proxy benchmark: what the queen (and LiteLLM's proxy) add to a worker's stream.

Run ``python -m bench.proxy --help`` (``python -m bench.proxy_overhead`` is the same command).
"""
