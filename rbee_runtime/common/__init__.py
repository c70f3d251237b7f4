"""Pieces shared by the queen, the hive and the worker: wire contracts, errors, ports."""
