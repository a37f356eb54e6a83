"""MLflow model registry: package a serving bundle, promote and roll back the champion, import it into BentoML."""
