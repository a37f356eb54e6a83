"""The served model and its faces: the bundle, the BundleRecommender, the BentoML service, the MLflow pyfunc, packaging."""
