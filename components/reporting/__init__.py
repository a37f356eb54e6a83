"""The reports index: one page linking every report the pipeline and the loop wrote, and the UIs."""
