"""Exit statuses of every ``rbee`` command."""

OK = 0
FAILURE = 1
INVALID_SPEC = 2
CHANGES_PENDING = 3
INTERRUPTED = 130
