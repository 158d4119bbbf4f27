"""Finished runs read back: run folders, the metrics a comparison shows, and its table."""
