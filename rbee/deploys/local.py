"""pyinfra's local connector under the spec's host name: ``@rbee-local/NAME`` is the host ``NAME``, run locally.

pyinfra's own ``@local`` host is always named ``@local``, so ``pyinfra --limit NAME`` (and ``rbee deploy``'s
batches, which limit by spec name) missed a spec host whose address is ``localhost``, and every report named it
``@local``. This connector is pyinfra's ``LocalConnector`` (commands run as subprocesses of pyinfra) that takes
its host name from the inventory entry; the host is in the group ``@local`` too. rbee registers it as the
pyinfra connector ``rbee-local`` (the ``pyinfra.connectors`` entry point in ``pyproject.toml``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pyinfra.api.exceptions import InventoryError
from pyinfra.connectors.local import LocalConnector


class NamedLocalConnector(LocalConnector):
    """``@rbee-local/NAME``: this machine, as the inventory host ``NAME``."""

    @staticmethod
    def make_names_data(name: str | None = None) -> Iterator[tuple[str, dict[str, Any], list[str]]]:
        if not name:
            raise InventoryError("@rbee-local needs the host's name: @rbee-local/NAME")
        yield name, {}, ["@local"]
