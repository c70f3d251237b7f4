"""The ``rbee`` command line."""
