"""Pretraining, multi-task fine-tuning and what they share: one loop, checkpoints, tracking."""
