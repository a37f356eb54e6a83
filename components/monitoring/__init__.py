"""Drift monitoring: Evidently reports on live windows and feedback, and the retrain decision."""
