"""The `recloop` command's papercuts: missing params files, --version, "did you mean", --set errors, stage help."""
from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner

from components.cli import cli
from components.config import Params
from components.stages import STAGES

REPO = Path(__file__).parents[1]


def test_a_missing_params_file_is_an_error_naming_it(tmp_path):
    result = CliRunner().invoke(cli, ["params", "--params", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert result.output == f"error: params file {tmp_path / 'nope.yaml'} not found\n"


def test_without_params_yaml_here_the_default_is_an_error_with_a_hint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["params"])
    assert result.exit_code == 2
    assert result.output.startswith("error: params file params.yaml not found (run recloop from the repository root")


def test_version_is_the_installed_package_version():
    # The console script, as a user types it: `recloop` is flows.cli's full group.
    done = subprocess.run([Path(sys.executable).parent / "recloop", "--version"], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout == f"recloop, version {version('recloop')}\n"


def test_unknown_keys_get_a_did_you_mean_in_the_file_and_in_set(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("finetune:\n  epoch: 3\n")
    in_file = CliRunner().invoke(cli, ["params", "--params", str(params)])
    assert in_file.exit_code == 2
    assert (f"error: invalid parameters in {params}:\n  finetune.epoch: unknown key (did you mean epochs?)"
            in in_file.output)

    by_set = CliRunner().invoke(cli, ["params", "--params", str(REPO / "params.yaml"), "--set", "pretrain.lrr=0.1"])
    assert by_set.exit_code == 2
    assert by_set.output == "error: invalid --set:\n  pretrain.lrr: unknown key (did you mean lr?)\n"


def test_set_errors_say_set_not_the_params_file():
    result = CliRunner().invoke(cli, ["params", "--params", str(REPO / "params.yaml"), "--set", "seed=many"])
    assert result.exit_code == 2
    assert "--set" in result.output and "params.yaml" not in result.output
    malformed = CliRunner().invoke(cli, ["params", "--params", str(REPO / "params.yaml"), "--set", "seed"])
    assert malformed.output == "error: --set 'seed' should look like section.key=value\n"


@pytest.mark.parametrize("name", list(STAGES))
def test_each_stage_help_lists_the_params_it_reads(name):
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0
    reads = result.output.split("Reads params:")[1].split("Options:")[0]
    by_key = {f.alias or n: f for n, f in Params.model_fields.items()}
    for section in STAGES[name].sections:
        fields = getattr(getattr(by_key.get(section), "annotation", None), "model_fields", None)
        # A section is shown with every key it holds; a single value or dotted key as it is.
        shown = f"{section}: {', '.join(fields)}" if fields else section
        assert f"  {shown}\n" in reads
    assert "  paths: canonical, validated, split" in reads


def test_the_pipeline_refuses_set_since_dvc_reads_params_yaml_alone():
    from flows.cli import cli as recloop

    result = CliRunner().invoke(recloop, ["pipeline", "--params", str(REPO / "params.yaml"), "--set", "seed=1"])
    assert result.exit_code == 2
    assert result.output.startswith("error: --set seed=1: the training pipeline runs through DVC")
