"""The hive: one per machine; keeps the model catalog and starts, watches and stops the workers."""
