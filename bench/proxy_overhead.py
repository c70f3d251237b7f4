"""What the queen costs, and what LiteLLM's proxy costs, on the same worker: ``python -m bench.proxy_overhead``.

The same command as ``python -m bench.proxy`` (the benchmark lives in :mod:`bench.proxy`; see bench/README.md).
"""

from __future__ import annotations

from bench.proxy.cli import main

if __name__ == "__main__":
    main()
