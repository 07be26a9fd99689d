"""Dataset storage: Parquet image shards with a checksummed manifest, and the embedded catalog."""
