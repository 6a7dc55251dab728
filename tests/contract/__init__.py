"""Contract tests: the mappings against every partner sample and description."""
