"""Tests of model files: round trips, atomic writes and rejection of bad or malicious files."""

from __future__ import annotations

import os
import pickle
import shlex

import ase
import numpy as np
import pytest
import torch

import mlpot
from mlpot import keys
from mlpot.config import ModelConfig
from mlpot.data.graph import atoms_to_graph, collate
from mlpot.errors import ModelFileError
from mlpot.models import io
from mlpot.models.io import FORMAT_NAME, FORMAT_VERSION, load_model, read_model_file, save_model
from mlpot.models.potential import Potential
from mlpot.models.statistics import Statistics

ELEMENTS = [1, 6, 8]
REFERENCES = [-13.6, -1027.0, -2038.0]


def make_potential(dtype: str = "float64", seed: int = 0) -> Potential:
    torch.manual_seed(seed)
    config = ModelConfig(cutoff=3.0, num_features=8, num_radial=4, radial_hidden=8, num_interactions=1, dtype=dtype)
    return Potential(config, ELEMENTS, REFERENCES, energy_scale=0.7, avg_num_neighbours=3.5)


def sample_batch():
    rng = np.random.default_rng(0)
    molecule = ase.Atoms("CH2O", positions=[[0, 0, 0], [1.1, 0, 0], [-0.4, 1.0, 0], [0, 0, 1.2]])
    molecule.positions += rng.normal(scale=0.05, size=(4, 3))
    crystal = ase.Atoms("OH", positions=[[0, 0, 0], [0.9, 0.3, 0.1]], cell=np.diag([3.1, 3.3, 3.6]), pbc=True)
    return collate([atoms_to_graph(atoms, 3.0) for atoms in (molecule, crystal)])


class Exploit:
    """An object whose unpickling runs a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "model.pt"
    save_model(make_potential(), path)
    return path


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_predictions(tmp_path, dtype):
    potential = make_potential(dtype)
    save_model(potential, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt")
    batch = sample_batch()
    expected = potential(batch, compute_stress=True)
    actual = loaded(batch, compute_stress=True)
    for name in (keys.ENERGY, keys.FORCES):
        assert torch.equal(actual[name], expected[name]), name
    assert torch.equal(actual[keys.STRESS][1], expected[keys.STRESS][1])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_loaded_dtype_and_mode(tmp_path, dtype):
    save_model(make_potential(dtype), tmp_path / "typed.pt")
    loaded = load_model(tmp_path / "typed.pt")
    assert loaded.dtype == getattr(torch, dtype)
    assert loaded.config.dtype == dtype
    assert not loaded.training


def test_constructor_values_kept(saved):
    loaded = mlpot.load_model(saved)
    assert loaded.elements == ELEMENTS
    assert loaded.reference_energies == REFERENCES
    assert loaded.energy_scale == 0.7
    assert loaded.avg_num_neighbours == 3.5
    assert loaded.cutoff == 3.0


def test_cast_model_saves_its_dtype(tmp_path):
    potential = make_potential("float32").to(torch.float64)
    save_model(potential, tmp_path / "model.pt")
    assert load_model(tmp_path / "model.pt").dtype == torch.float64


def test_file_holds_plain_values(saved):
    payload = torch.load(saved, map_location="cpu", weights_only=True)
    assert payload["format"] == FORMAT_NAME
    assert payload["format_version"] == FORMAT_VERSION
    assert payload["units"] == keys.UNITS
    assert payload["elements"] == ELEMENTS
    assert payload["dtype"] == "float64"
    assert all(isinstance(tensor, torch.Tensor) for tensor in payload["state_dict"].values())
    assert not any(isinstance(value, torch.nn.Module) for value in payload.values())


def test_statistics_and_metadata_stored(tmp_path):
    statistics = Statistics(ELEMENTS, REFERENCES, 0.7, 3.5, num_structures=12)
    metadata = {"config": {"model": {"cutoff": 3.0}}, "errors": [0.1, None], "note": "Å"}
    save_model(make_potential(), tmp_path / "model.pt", statistics=statistics, metadata=metadata)
    payload = read_model_file(tmp_path / "model.pt")
    assert Statistics.from_dict(payload["statistics"]) == statistics
    assert payload["metadata"] == metadata


def test_statistics_of_other_elements_rejected(tmp_path):
    statistics = Statistics([1, 8], [-13.6, -2038.0], 0.7, 3.5)
    with pytest.raises(ValueError, match="elements"):
        save_model(make_potential(), tmp_path / "model.pt", statistics=statistics)


@pytest.mark.parametrize("bad", [object(), {1: "integer key"}, float("nan"), torch.zeros(2)])
def test_metadata_must_be_plain(tmp_path, bad):
    with pytest.raises(ValueError, match="metadata"):
        save_model(make_potential(), tmp_path / "model.pt", metadata={"value": bad})


def test_save_creates_folders(tmp_path):
    path = save_model(make_potential(), tmp_path / "run" / "nested" / "model.pt")
    assert path.is_file()


def test_save_leaves_no_temporary_file(tmp_path, saved):
    save_model(make_potential(seed=1), saved)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_failed_save_keeps_old_file(tmp_path, saved, monkeypatch):
    before = saved.read_bytes()

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(io.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(make_potential(seed=1), saved)
    assert saved.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "absent.pt")


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(ModelFileError, match="not a file"):
        load_model(tmp_path)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_file(saved, fraction):
    data = saved.read_bytes()
    saved.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelFileError, match=str(saved)):
        load_model(saved)


def test_flipped_bytes_in_weights(saved):
    # Every byte of a tensor's stored data, located by searching the file for it.
    payload = torch.load(saved, weights_only=True)
    data = saved.read_bytes()
    name, tensor = next((n, t) for n, t in payload["state_dict"].items() if t.numel() >= 8)
    raw = tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    start = data.find(raw)
    assert start >= 0, f"stored bytes of {name} not found in the file"
    rng = np.random.default_rng(0)
    for offset in rng.choice(len(raw), size=5, replace=False):
        corrupted = bytearray(data)
        corrupted[start + offset] ^= 0xFF
        saved.write_bytes(bytes(corrupted))
        with pytest.raises(ModelFileError, match="corrupted"):
            load_model(saved)


def test_flipped_bytes_anywhere(saved):
    # A flip in zip padding can leave the content intact; any other flip must raise.
    original = load_model(saved).state_dict()
    data = saved.read_bytes()
    rng = np.random.default_rng(1)
    raised = 0
    for position in rng.choice(len(data), size=40, replace=False):
        corrupted = bytearray(data)
        corrupted[position] ^= 0xFF
        saved.write_bytes(bytes(corrupted))
        try:
            loaded = load_model(saved).state_dict()
        except ModelFileError:
            raised += 1
            continue
        assert all(torch.equal(loaded[name], original[name]) for name in original), f"flip at byte {position}"
    assert raised > 20


def test_text_file_rejected(tmp_path):
    path = tmp_path / "model.pt"
    path.write_text("energy = 3\n")
    with pytest.raises(ModelFileError, match="could not be read"):
        load_model(path)


def test_other_torch_file_rejected(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(ModelFileError, match="not an mlpot model file"):
        load_model(path)


def test_training_checkpoint_hint(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "pytorch-lightning_version": "2.4.0"}, path)
    with pytest.raises(ModelFileError, match="training checkpoint"):
        load_model(path)


def test_newer_format_rejected(saved):
    payload = torch.load(saved, weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, saved)
    with pytest.raises(ModelFileError, match="upgrade mlpot"):
        load_model(saved)


def test_changed_weight_fails_checksum(saved):
    payload = torch.load(saved, weights_only=True)
    name = next(iter(payload["state_dict"]))
    payload["state_dict"][name] = payload["state_dict"][name] + 1.0
    torch.save(payload, saved)
    with pytest.raises(ModelFileError, match="checksum"):
        load_model(saved)


def test_weights_of_other_shape_rejected(saved):
    payload = torch.load(saved, weights_only=True)
    payload["config"]["num_features"] = 12
    payload["checksum"] = io._checksum(payload)
    torch.save(payload, saved)
    with pytest.raises(ModelFileError, match="do not fit"):
        load_model(saved)


def test_missing_entry_rejected(saved):
    payload = torch.load(saved, weights_only=True)
    del payload["elements"]
    torch.save(payload, saved)
    with pytest.raises(ModelFileError, match="'elements'"):
        load_model(saved)


def test_pickled_code_in_torch_file(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "model.pt"
    torch.save(Exploit(marker), path)
    with pytest.raises(ModelFileError, match="posix.system|nt.system"):
        load_model(path)
    assert not marker.exists()


def test_pickled_code_inside_model_file(tmp_path):
    marker = tmp_path / "marker"
    path = save_model(make_potential(), tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    payload["metadata"] = {"note": Exploit(marker)}
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match="pickled Python objects"):
        load_model(path)
    assert not marker.exists()


def test_plain_pickle_with_code(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps(Exploit(marker), protocol=2))
    with pytest.raises(ModelFileError, match="pickled Python objects"):
        load_model(path)
    assert not marker.exists()


def test_exploit_runs_when_unpickled(tmp_path):
    # Guards the tests above: the payload does create the marker when loaded unsafely.
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(Exploit(marker)))
    assert marker.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_model_loads_on_cpu(tmp_path):
    potential = make_potential().to("cuda")
    save_model(potential, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt")
    assert next(loaded.parameters()).device.type == "cpu"
    batch = sample_batch()
    expected = potential({name: value.to("cuda") for name, value in batch.items()})[keys.ENERGY].cpu()
    torch.testing.assert_close(loaded(batch)[keys.ENERGY], expected)
