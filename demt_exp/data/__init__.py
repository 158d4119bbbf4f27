"""Datasets, transforms and the task registry."""
