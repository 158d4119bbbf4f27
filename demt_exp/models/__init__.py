"""Backbones, the deformable operator, encoder (deformable mixer), decoder (task-aware transformer), heads."""
