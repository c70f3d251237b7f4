"""Step library of the Gherkin features, one module per domain."""
