"""``python -m rbee.deploys.entry NAME``: the path of a pyinfra entry file (``inventory``, ``site``, ...)."""

import sys

from rbee.deploys.entry import ENTRIES, path

if len(sys.argv) != 2 or sys.argv[1] not in ENTRIES:
    raise SystemExit(f"usage: python -m rbee.deploys.entry {{{','.join(ENTRIES)}}}")
print(path(sys.argv[1]))
