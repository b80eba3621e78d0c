"""The ability side: emergence curves, the flagger, its statistics, sources, plots."""
