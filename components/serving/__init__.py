"""The BentoML service and what it stands on: the bundle, the Recommender, schemas, limits, the feedback log."""
