"""MLflow model registry: register a model version, alias it challenger, promote and roll back the champion."""
