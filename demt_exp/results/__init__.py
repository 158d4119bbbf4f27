"""What the suite tabulates: finished runs read back (folders, metrics, table), model sizes, the preset table."""
