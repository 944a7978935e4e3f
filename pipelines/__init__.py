"""Jobs, schedules, partitions and automation policies."""
