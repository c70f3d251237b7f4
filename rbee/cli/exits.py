"""Exit statuses of every ``rbee`` command."""

OK = 0
FAILURE = 1
INVALID_SPEC = 2
MISSING_DEPENDENCY = 2  # a usage error, as click's own (an unknown option also exits 2)
USAGE = 2  # an option value that does not fit what the hosts tell (click's own usage errors exit 2)
CHANGES_PENDING = 3
INTERRUPTED = 130
