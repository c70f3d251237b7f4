"""``python -m rbee_runtime.worker``."""

from rbee_runtime.worker.cli import main

if __name__ == "__main__":
    main()
