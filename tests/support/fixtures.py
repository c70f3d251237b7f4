"""The harness's pytest fixtures (a plugin: ``pytest_plugins = ["tests.support.fixtures"]``).

- ``tiny_model_path``: the tiny GGUF ``rbee-tiny`` (written once into ``~/.cache/rbee/models``).
- ``free_port`` / ``free_port_factory``: free TCP ports on 127.0.0.1.
- ``processes`` (one test) and ``module_processes`` (one module): a :class:`ProcessPool` that kills
  everything it started, and everything those started, at the end, also on failure.
- ``hives``: :class:`Hives` on ``processes`` (configs with free ports, hive processes).
- ``shared_cluster``: one queen + one hive keeping a 2-slot worker of ``rbee-tiny``, for the session.
- ``streams``: streamed requests (:class:`Stream`), disconnected at the end.
- ``freezer``: SIGSTOPs processes, SIGCONTs them again at the end.
- ``queen_stub``: a stand-in queen recording heartbeats; ``callback_receiver``: a stand-in hive ready endpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rbee.tiny_model import ensure_tiny_model
from rbee_runtime.common.ports import free_port as get_free_port
from tests.support.processes import Freezer, ProcessPool
from tests.support.services import Cluster, Hives, start_cluster
from tests.support.sse import Streams
from tests.support.stubs import CallbackReceiver, QueenStub

MODEL_CACHE_DIR = Path("~/.cache/rbee/models").expanduser()


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    """The tiny random llama GGUF (``rbee-tiny``): written once, loads in milliseconds."""
    return ensure_tiny_model(MODEL_CACHE_DIR)


@pytest.fixture
def free_port() -> int:
    """One free TCP port on 127.0.0.1."""
    return get_free_port()


@pytest.fixture
def free_port_factory() -> Callable[[], int]:
    """A function returning a free TCP port on 127.0.0.1 at each call (for several services)."""
    return get_free_port


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[ProcessPool]:
    """Processes of one test; every one (and everything they started) is killed afterwards."""
    pool = ProcessPool(tmp_path / "procs")
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="module")
def module_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessPool]:
    """Processes shared by the tests of one module; all killed after its last test."""
    pool = ProcessPool(tmp_path_factory.mktemp("procs"))
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def hives(processes: ProcessPool) -> Hives:
    """Starts hive processes; afterwards they and every worker they started are killed."""
    return Hives(processes)


@pytest.fixture(scope="session")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Iterator[Cluster]:
    """Queen + hive keeping one 2-slot worker of ``rbee-tiny`` (context 1024), for the whole session."""
    pool = ProcessPool(tmp_path_factory.mktemp("shared-cluster"))
    try:
        yield start_cluster(pool, tiny_model_path, workers=1, slots=2, queen={"queue_max": 8})
    finally:
        pool.close()


@pytest.fixture
def streams() -> Iterator[Streams]:
    """Streamed requests of one test; those still open are disconnected at its end."""
    opened = Streams()
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def freezer() -> Iterator[Freezer]:
    """SIGSTOP for one test; everything frozen is thawed at its end, also on failure."""
    frozen = Freezer()
    try:
        yield frozen
    finally:
        frozen.close()


@pytest.fixture
def queen_stub() -> Iterator[QueenStub]:
    """A real HTTP server acting as the queen's heartbeat endpoint."""
    stub = QueenStub()
    try:
        yield stub
    finally:
        stub.close()


@pytest.fixture
def callback_receiver() -> Iterator[CallbackReceiver]:
    """A real HTTP server acting as the hive's ready endpoint (``callback_receiver.url``)."""
    receiver = CallbackReceiver()
    try:
        yield receiver
    finally:
        receiver.close()
