"""Exploration with logged propensities, off-policy evaluation and the off-policy-corrected policy learner."""
