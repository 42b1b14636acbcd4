"""drift-detector: watches clusters and reports where they differ from Git."""
