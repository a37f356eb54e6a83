"""The file MLflow runs to build recloop's pyfunc model ("models from code": no pickled objects)."""
import mlflow.models

from components.serving.pyfunc import RecloopPyfunc

mlflow.models.set_model(RecloopPyfunc())
