"""bentofile.yaml builds the service it names, with the model `recloop promote` imports and every endpoint."""
from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from components.config import load_params

REPO = Path(__file__).parents[2]


def test_bentofile_names_the_service_its_model_and_the_sources_it_needs():
    spec = yaml.safe_load((REPO / "bentofile.yaml").read_text())
    module, name = spec["service"].split(":")
    service = getattr(importlib.import_module(module), name)
    bento_model = load_params(REPO / "params.yaml").registry.bento_model
    assert [str(m.tag) for m in service.models] == [f"{bento_model}:latest"]
    assert {"recommend", "similar_items", "feedback", "info", "reload"} <= set(service.apis)
    assert "components/**/*.py" in spec["include"] and "params.yaml" in spec["include"]
    assert spec["python"]["lock_packages"] is False  # locking would need the network


def test_the_bento_pins_what_the_mlflow_model_pins():
    from components.serving.pyfunc import pip_requirements

    packages = yaml.safe_load((REPO / "bentofile.yaml").read_text())["python"]["packages"]
    assert set(pip_requirements()) <= set(packages)
