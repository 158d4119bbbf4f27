"""Pictures: prediction panels for trackers, prediction files, and comparison plots."""
