"""params.yaml -> typed Params: defaults, dotted overrides, and errors that name the key."""
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from components.cli import cli
from components.config import GenericSource, load_params, parse_override
from components.errors import RecloopError

REPO = Path(__file__).parents[1]


def test_repository_params_load_and_match_the_defaults_where_unset():
    params = load_params(REPO / "params.yaml")
    assert params.ingest.source == "movielens"
    assert params.ingest.path == Path("data/raw/ml-latest-small")
    assert params.validate_.max_value == 5.0


def test_dotted_overrides_are_parsed_as_yaml_scalars():
    params = load_params(None, ["split.max_history=50", "split.time.cutoff=2015-01-01",
                                                     "validate.max_timestamp=null", "ingest.dataset=Beauty"])
    assert params.split.max_history == 50
    assert params.split.time.cutoff.isoformat() == "2015-01-01"
    assert params.validate_.max_timestamp is None
    assert params.ingest.dataset == "Beauty"


@pytest.mark.parametrize("override, message", [
    ("split.max_history=abc", "split.max_history: input should be a valid integer"),
    ("split.cold_item_fraction=1.5", "split.cold_item_fraction: input should be less than 1"),
    ("split.colditems=0.1", r"split.colditems: unknown key \(did you mean cold_item_fraction\?\)"),
    ("splt.max_history=50", r"splt: unknown key \(did you mean split\?\)"),
    ("orchestrate.datasets=[{name: a, ingest: {sorce: x}}]",
     r"datasets.0.ingest.sorce: unknown key \(did you mean source\?\)"),
    ("split.zzz=1", r"split.zzz: unknown key$"),
    ("ingest.source=netflix", "ingest.source: input should be"),
])
def test_bad_values_name_the_key_and_what_was_expected(override, message):
    with pytest.raises(RecloopError, match=message):
        load_params(None, [override])


def test_malformed_yaml_and_malformed_override_are_clear(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("split: [unclosed\n")
    with pytest.raises(RecloopError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(RecloopError, match="--set 'max_history' should look like section.key=value"):
        parse_override("max_history")
    with pytest.raises(RecloopError, match="--set seed.x: seed is a value, not a section"):
        load_params(REPO / "params.yaml", ["seed.x=1"])


def test_a_missing_params_file_is_an_error_not_the_defaults(tmp_path, monkeypatch):
    with pytest.raises(RecloopError, match=f"params file {tmp_path / 'nope.yaml'} not found$"):
        load_params(tmp_path / "nope.yaml")
    monkeypatch.chdir(tmp_path)  # no params.yaml here: the default file is missing too, with a hint
    with pytest.raises(RecloopError, match="params file params.yaml not found .run recloop from the repository root"):
        load_params()


def test_errors_say_whether_the_file_or_a_set_override_is_wrong(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("split:\n  max_histroy: 50\n")
    with pytest.raises(RecloopError) as caught:
        load_params(params, ["seed=x"])
    message = str(caught.value)
    assert f"invalid parameters in {params}:\n  split.max_histroy: unknown key (did you mean max_history?)" in message
    assert "invalid --set:\n  seed: input should be a valid integer" in message
    # A --set override that fixes a section of the file is not blamed on the file.
    with pytest.raises(RecloopError, match=r"^invalid --set:\n  split.max_history"):
        load_params(REPO / "params.yaml", ["split.max_history=1"])


def test_the_commented_generic_source_block_in_params_yaml_is_valid():
    text = (REPO / "params.yaml").read_text()
    block = text[text.index("  # generic:"):text.index("\nvalidate:")]
    uncommented = "\n".join(re.sub(r"^  # ?", "", line) for line in block.splitlines() if line.startswith("  #"))
    generic = yaml.safe_load(uncommented)["generic"]
    GenericSource.model_validate(generic)
    # Every key is shown, so the block documents the whole section.
    assert set(generic) == set(GenericSource.model_fields)
    assert set(generic["columns"]) == set(GenericSource.model_fields["columns"].annotation.model_fields)


def test_cli_prints_one_line_errors_and_exits_2(tmp_path):
    result = CliRunner().invoke(cli, ["params", "--params", str(REPO / "params.yaml"),
                                      "--set", "split.max_history=-1"])
    assert result.exit_code == 2
    assert "error: invalid --set:" in result.output and "split.max_history" in result.output
    assert "Traceback" not in result.output


def test_cli_shows_the_effective_params(tmp_path):
    result = CliRunner().invoke(cli, ["params", "--params", str(REPO / "params.yaml"), "-s", "seed=7"])
    assert result.exit_code == 0, result.output
    assert "seed: 7" in result.output and "validate:" in result.output


def test_a_foundation_pretrains_at_its_own_rate_unless_it_defers_to_pretrain():
    params = load_params(REPO / "params.yaml", ["pretrain.lr=0.002", "pretrain.epochs=7"])
    knobs = params.foundation.pretraining(params.pretrain)
    assert (knobs.lr, knobs.epochs) == (params.foundation.lr, 7) and knobs.lr != params.pretrain.lr
    deferred = load_params(REPO / "params.yaml", ["foundation.lr=null"])
    assert deferred.foundation.pretraining(deferred.pretrain) == deferred.pretrain
