"""``python -m bench.proxy``: see :mod:`bench.proxy.cli`."""

from bench.proxy.cli import main

main()
