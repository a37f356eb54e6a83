"""params.yaml -> typed Params: defaults, dotted overrides, and errors that name the key."""
from pathlib import Path

import pytest
from click.testing import CliRunner

from components.cli import cli
from components.config import load_params, parse_override
from components.errors import RecloopError

REPO = Path(__file__).parents[1]


def test_repository_params_load_and_match_the_defaults_where_unset():
    params = load_params(REPO / "params.yaml")
    assert params.ingest.source == "movielens"
    assert params.ingest.path == Path("data/raw/ml-latest-small")
    assert params.validate_.max_value == 5.0


def test_dotted_overrides_are_parsed_as_yaml_scalars(tmp_path):
    params = load_params(tmp_path / "absent.yaml", ["split.max_history=50", "split.time.cutoff=2015-01-01",
                                                     "validate.max_timestamp=null", "ingest.dataset=Beauty"])
    assert params.split.max_history == 50
    assert params.split.time.cutoff.isoformat() == "2015-01-01"
    assert params.validate_.max_timestamp is None
    assert params.ingest.dataset == "Beauty"


@pytest.mark.parametrize("override, message", [
    ("split.max_history=abc", "split.max_history: input should be a valid integer"),
    ("split.cold_item_fraction=1.5", "split.cold_item_fraction: input should be less than 1"),
    ("split.colditems=0.1", "split.colditems: unknown key"),
    ("ingest.source=netflix", "ingest.source: input should be"),
])
def test_bad_values_name_the_key_and_what_was_expected(tmp_path, override, message):
    with pytest.raises(RecloopError, match=message):
        load_params(tmp_path / "absent.yaml", [override])


def test_malformed_yaml_and_malformed_override_are_clear(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("split: [unclosed\n")
    with pytest.raises(RecloopError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(RecloopError, match="section.key=value"):
        parse_override("max_history")
    with pytest.raises(RecloopError, match="is a value, not a section"):
        load_params(REPO / "params.yaml", ["seed.x=1"])


def test_cli_prints_one_line_errors_and_exits_2(tmp_path):
    result = CliRunner().invoke(cli, ["params", "--params", str(tmp_path / "absent.yaml"),
                                      "--set", "split.max_history=-1"])
    assert result.exit_code == 2
    assert "error: invalid parameters" in result.output and "split.max_history" in result.output
    assert "Traceback" not in result.output


def test_cli_shows_the_effective_params(tmp_path):
    result = CliRunner().invoke(cli, ["params", "--params", str(REPO / "params.yaml"), "-s", "seed=7"])
    assert result.exit_code == 0, result.output
    assert "seed: 7" in result.output and "validate:" in result.output
