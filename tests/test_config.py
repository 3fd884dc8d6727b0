"""Config files, keys, types and command-line overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlpot.config import Config, config_from_dict, fields_by_key, load_config, resolve_data_path, set_key
from mlpot.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "data" / "configs").glob("*.yaml"))


def test_keys_are_unique_across_sections():
    names = fields_by_key()
    assert "train_file" in names
    assert names["num_features"][0] == "model"
    assert names["max_epochs"][0] == "training"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_bundled_config_loads(path):
    config = load_config(path)
    assert resolve_data_path(config.data.train_file).is_file()
    for optional in (config.data.test_file, config.data.isolated_atoms_file):
        if optional:
            assert resolve_data_path(optional).is_file()


def test_every_bundled_dataset_has_a_config():
    assert {path.stem for path in CONFIGS} >= {"acetylacetone", "ethanol", "rmd17_ethanol", "rmd17_aspirin"}


def test_unknown_key_suggests_close_match():
    with pytest.raises(ConfigError, match="did you mean 'num_features'"):
        config_from_dict({"model": {"num_feature": 8}})


def test_key_in_wrong_section_is_named():
    with pytest.raises(ConfigError, match="belongs in the 'training' section"):
        config_from_dict({"model": {"max_epochs": 8}})


def test_unknown_section_raises():
    with pytest.raises(ConfigError, match="unknown config key 'optimiser'"):
        config_from_dict({"optimiser": {}})


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [("model", "num_features", "many"), ("model", "num_features", 2.5), ("training", "learning_rate", True), ("model", "dipole", "maybe")],
)
def test_wrong_value_type_raises(section, key, value):
    with pytest.raises(ConfigError, match=key):
        config_from_dict({section: {key: value}})


def test_choice_outside_list_raises():
    with pytest.raises(ConfigError, match="float32, float64"):
        config_from_dict({"model": {"dtype": "float16"}})


def test_command_line_strings_are_converted():
    config = Config()
    set_key(config, "max_epochs", "12")
    set_key(config, "max_time", "none")
    set_key(config, "labels", "energy,forces,dipole")
    set_key(config, "dipole", "true")
    assert config.training.max_epochs == 12
    assert config.training.max_time is None
    assert config.data.labels == ["energy", "forces", "dipole"]
    assert config.model.dipole is True


def test_invalid_yaml_raises(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(path)


def test_missing_config_file_raises(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")


def test_unknown_bundled_dataset_raises():
    with pytest.raises(ConfigError, match="no bundled dataset"):
        resolve_data_path("bundled:nothing/here.xyz")
