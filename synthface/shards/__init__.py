"""shards stage."""
