"""The one test harness: real rbee processes, waiting, SSE reading and stand-in servers.

- :mod:`tests.support.waiting`: ``wait_until`` (the one poll-until helper), ``gone``, ``pid_alive``.
- :mod:`tests.support.processes`: :class:`ProcessPool` starts processes (each in its own session,
  tagged through its environment) and kills every one of them, and everything they started, in
  ``close()`` (also on failure); :class:`Proc` is one of them with its log; :class:`Freezer`.
- :mod:`tests.support.services`: start a queen, a hive, a worker, a queen + hive cluster or a whole
  ``rbee up`` cluster; each waits for ``/health`` and fails with the process's log tail.
- :mod:`tests.support.sse`: the one SSE reader (``sse_events``) and a threaded :class:`Stream`.
- :mod:`tests.support.stubs`: in-process HTTP servers recording what services POST to them.
- :mod:`tests.support.fixtures`: the pytest fixtures wiring the above (a plugin loaded by
  ``tests/conftest.py`` and ``features/conftest.py``).
"""
