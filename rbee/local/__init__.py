"""``rbee up``: run the local part of a cluster spec (or the embedded default) in the foreground."""
