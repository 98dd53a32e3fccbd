"""The published FlashRNA checkpoints: ``import-model`` of the official-format fixture (written by
the official code, deepgenomics/flashrna @ad9be86) against the official model's own outputs and
track tables; the restricted unpickler against malicious and truncated files; ``--model`` with a
checkpoint (imported into the cache on the fly)."""

from __future__ import annotations

import json
import pickle
import sys
import types
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import fixture_path

from flashrna.cli import main
from flashrna.model import load_model, predict, read_model_description
from flashrna.tracks import TrackTable
from flashrna.utils import FlashRNAError
from flashrna.zoo import import_model, load_track_model
from flashrna.zoo.official import official_model_config
from flashrna.zoo.unpickle import TorchArchive

SPECIES = {"hg38": "human", "mm10": "mouse"}


def official(name: str):
    return fixture_path(f"flashrna-official/{name}")


def assert_close_to(got: np.ndarray, expected: np.ndarray) -> None:
    """Within 1e-5 of the expectation's largest magnitude (the issue's tolerance)."""
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    return import_model(official("official-tiny.ckpt"), tmp_path_factory.mktemp("i") / "tiny")


def official_tables(species: str) -> pd.DataFrame:
    """The official CSV as the official TracksMapping loads it (flash_rna/data/tracks_mapping
    .py, default tracks_to_load): the rna, dnase and atac rows in that order, each type's
    strand_pair (an original_index within the type) re-pointed at the loaded rows."""
    frame = pd.read_csv(official(f"flashrna_tracks_mapping_{species}.csv"), sep="\t")
    parts, offset = [], 0
    for kind in ("rna", "dnase", "atac"):
        part = frame[frame["track_type"] == kind].reset_index(drop=True)
        position = dict(zip(part["original_index"], part.index + offset, strict=True))
        parts.append(part.assign(strand_pair=part["strand_pair"].map(position)))
        offset += len(part)
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------------------------
# The fixture: outputs and tables
# --------------------------------------------------------------------------------------------


def test_imported_model_computes_the_official_outputs(imported):
    model = load_model(imported)
    sequences = torch.from_numpy(np.load(official("input.npy")))
    with torch.no_grad():
        assert_close_to(
            model.embed(sequences).numpy(), np.load(official("expected-embeddings.npy"))
        )
        for species, head in SPECIES.items():
            forward = model(sequences, head).numpy()
            assert_close_to(forward, np.load(official(f"expected-{species}-forward.npy")))
    for species, head in SPECIES.items():
        averaged = predict(model, sequences, head, device="cpu").numpy()
        assert_close_to(averaged, np.load(official(f"expected-{species}-rc-averaged.npy")))


def test_imported_model_describes_itself(imported):
    description = read_model_description(imported)
    assert description["architecture"] == "flashrna"
    assert description["input_length"] == 524_288 and description["crop_bins"] == 5120
    assert description["heads"] == {
        "human": {"genome": "hg38", "value_space": "squashed"},
        "mouse": {"genome": "mm10", "value_space": "squashed"},
    }
    made_with = json.loads(official("made-with.json").read_text())
    assert description["source"]["pytorch-lightning_version"] == made_with["lightning"]
    config = json.loads((imported / "config.json").read_text())["model"]
    # Official conv rule for 128 -> 256 over 5 layers: 128·round(geomspace/128).
    assert config["tower_channels"] == [128, 128, 256, 256, 256]
    assert config["heads"] == {
        "human": made_with["output_dim_human"],
        "mouse": made_with["output_dim_mouse"],
    }
    assert (config["num_heads"], config["head_dim"], config["dim"]) == (2, 128, 256)


@pytest.mark.parametrize("species", ["hg38", "mm10"])
def test_imported_track_tables_equal_the_official_csvs(imported, species):
    table = TrackTable.read(imported / f"targets-{SPECIES[species]}.txt")
    expected = official_tables(species)
    assert list(table.identifier) == list(expected["identifier"])
    np.testing.assert_array_equal(table.strand_pair, expected["strand_pair"])
    np.testing.assert_allclose(table.scale, expected["scale"], rtol=1e-7)
    np.testing.assert_array_equal(table.clip_soft, expected["clip_soft"])
    assert list(table.sum_stat) == list(expected["sum_stat"])
    assert list(table.frame["description"]) == list(expected["description"])
    tissue = expected["gtex_tissue"]
    assert list(table.gtex_tissue) == [t if isinstance(t, str) else "" for t in tissue]
    assert list(table.assay) == [t.upper() for t in expected["track_type"]]
    assert np.isnan(table.clip).all()  # not in the official tables
    # deepgenomics/flashrna data/flashrna_tracks_mapping_hg38.csv, the released models' human
    # outputs: 1,612 tracks (271 strand pairs), 87 GTEx tracks over 37 tissues.
    if species == "hg38":
        assert len(table) == 1612 and (table.strand_pair != np.arange(1612)).sum() == 2 * 271
        gtex = table.gtex_tissue[table.gtex_tissue != ""]
        assert len(gtex) == 87 and len(set(gtex)) == 37


def test_reimport_does_nothing_and_another_directory_is_refused(imported, tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in imported.iterdir()}
    assert main(["import-model", str(official("official-tiny.ckpt")), "--out", str(imported)]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in imported.iterdir()} == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FlashRNAError, match="exists and holds other files"):
        import_model(official("official-tiny.ckpt"), tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------------------------------
# Files that must not load
# --------------------------------------------------------------------------------------------


def checkpoint_with_pickle(path, data: bytes) -> None:
    """A torch.save-style zip archive whose data.pkl is ``data``."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")


class Runs:
    """Pickles to a call of ``function`` with ``argument``."""

    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"cos\nsystem\n(S'touch MARKER'\ntR.", "os.system"),  # protocol 0, by hand
        (None, "posix.system"),  # what pickle.dumps writes for os.system (STACK_GLOBAL)
        (pickle.dumps({"state_dict": Runs(eval, "1")}, protocol=2), "builtins.eval"),
    ],
)
def test_a_pickle_calling_another_global_is_refused(tmp_path, monkeypatch, data, name):
    import os

    monkeypatch.chdir(tmp_path)
    if data is None:
        data = pickle.dumps({"hyper_parameters": Runs(os.system, "touch MARKER")}, protocol=4)
    else:
        data = data.replace(b"MARKER", str(tmp_path / "MARKER").encode())
    checkpoint_with_pickle(tmp_path / "evil.ckpt", data)
    with pytest.raises(FlashRNAError, match=rf"refused .*'{name}'"):
        import_model(tmp_path / "evil.ckpt", tmp_path / "out")
    assert not (tmp_path / "MARKER").exists() and not (tmp_path / "out").exists()
    argv = ["import-model", str(tmp_path / "evil.ckpt"), "--out", str(tmp_path / "out")]
    assert main(argv) == 1


def test_truncated_and_corrupt_checkpoints_give_clear_errors(tmp_path):
    whole = official("official-tiny.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(FlashRNAError, match=r"cut\.ckpt: not a complete PyTorch checkpoint"):
        import_model(tmp_path / "cut.ckpt", tmp_path / "out")
    # A pickle that ends early, inside a well-formed archive.
    with zipfile.ZipFile(official("official-tiny.ckpt")) as archive:
        pickled = archive.read("archive/data.pkl")
    checkpoint_with_pickle(tmp_path / "short.ckpt", pickled[: len(pickled) // 2])
    with pytest.raises(FlashRNAError, match=r"short\.ckpt: unreadable checkpoint pickle"):
        import_model(tmp_path / "short.ckpt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_settings_the_model_cannot_compute_are_named():
    fields = {"dim": 256, "transformer_num_layers": 2, "head_dim": 128, "conv_dim_in": 128}
    fields |= {"conv_dim_out": 256, "output_hidden_dim": 64, "output_dim_human": 10}
    fields |= {"output_dim_mouse": 5}
    assert official_model_config(fields, "x").heads == {"human": 10, "mouse": 5}
    with pytest.raises(FlashRNAError, match=r"transformer_norm='rms'.*mlp_activation='swiglu'"):
        official_model_config(
            {**fields, "transformer_norm": "rms", "mlp_activation": "swiglu"}, "x"
        )


# --------------------------------------------------------------------------------------------
# A single-species checkpoint with pandas-2-style (object) columns, written here
# --------------------------------------------------------------------------------------------


def fake_official_modules(monkeypatch) -> dict[str, type]:
    """Stand-ins for the official classes, registered under their module names so that
    torch.save pickles them as the official code does (by name, state as a dict)."""
    for package in ("flash_rna", "flash_rna.models", "flash_rna.data"):
        monkeypatch.setitem(sys.modules, package, types.ModuleType(package))
    classes = {}
    for module, name in (
        ("flash_rna.models.flashrna", "FlashRNA"),
        ("flash_rna.models.flashrna", "FlashRNA_Config"),
        ("flash_rna.data.borzoi", "FlashRNAHumanTracksMapping"),
    ):
        if module not in classes:
            monkeypatch.setitem(sys.modules, module, types.ModuleType(module))
            classes[module] = sys.modules[module]
        cls = type(name, (), {"__module__": module})
        setattr(sys.modules[module], name, cls)
        classes[name] = cls
    return classes


def test_a_human_only_checkpoint_with_object_columns(tmp_path, monkeypatch):
    classes = fake_official_modules(monkeypatch)
    source = TorchArchive(official("official-tiny.ckpt")).load()
    fields = dict(source["hyper_parameters"]["model_config"].state)
    human = fields["output_dim_human"]
    state = {k: v.load().clone() for k, v in source["state_dict"].items()}
    for kind in ("weight", "bias"):  # the human rows of the unified head only
        state[f"model.unified_head.{kind}"] = state[f"model.unified_head.{kind}"][:human].clone()
    table = official_tables("hg38")
    text = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    # Text as pandas 2 holds it (object arrays, blocks of several columns).
    table = table.astype(dict.fromkeys(text, object)).copy()
    table.columns = pd.Index(list(table.columns), dtype=object)
    mapping = classes["FlashRNAHumanTracksMapping"]()
    mapping.__dict__.update(_metadata_df=table, _loaded_tracks=["rna", "dnase", "atac"])
    config = classes["FlashRNA_Config"]()
    config.__dict__.update(fields, species="hg38", output_dim_mouse=0, tracks_mapping=mapping)
    hyper = {"model_class": classes["FlashRNA"], "model_config": config}
    torch.save({"state_dict": state, "hyper_parameters": hyper}, tmp_path / "human.ckpt")
    monkeypatch.undo()  # the reader must not need them

    out = import_model(tmp_path / "human.ckpt", tmp_path / "human")
    model = load_model(out)
    assert dict(model.config.heads) == {"human": human}
    sequences = torch.from_numpy(np.load(official("input.npy")))
    with torch.no_grad():
        forward = model(sequences, "human").numpy()
    assert_close_to(forward, np.load(official("expected-hg38-forward.npy")))
    imported = TrackTable.read(out / "targets-human.txt")
    assert list(imported.identifier) == list(table["identifier"])
    np.testing.assert_array_equal(imported.strand_pair, table["strand_pair"].astype(int))


# --------------------------------------------------------------------------------------------
# --model with a checkpoint
# --------------------------------------------------------------------------------------------


def test_a_checkpoint_as_model_is_imported_into_the_cache(tmp_path, monkeypatch, imported):
    monkeypatch.setenv("FLASHRNA_CACHE", str(tmp_path / "cache"))
    (tmp_path / "w.bed").write_text("chr1\t600000\t600001\n")
    common = [
        "--bed",
        str(tmp_path / "w.bed"),
        "--fasta",
        str(fixture_path("genome/hg38_1m.fa.gz")),
    ]
    common += ["--seq-length", "8192", "--crop-bins", "0", "--device", "cpu", "--dtype", "float32"]
    checkpoint = str(official("official-tiny.ckpt"))
    assert main(["predict", "--model", checkpoint, *common, "--out", str(tmp_path / "p")]) == 1
    assert main(["predict", "--model", checkpoint, *common, "--allow-length",
                 "--out", str(tmp_path / "p")]) == 0  # fmt: skip
    cached = list((tmp_path / "cache" / "models").iterdir())
    assert len(cached) == 1 and (cached[0] / "targets-mouse.txt").is_file()
    argv = ["predict", "--model", str(imported), *common, "--allow-length"]
    assert main([*argv, "--out", str(tmp_path / "q")]) == 0
    got = np.load(tmp_path / "p" / "predictions.npy")
    assert got.shape == (1, 256, 1612)
    np.testing.assert_array_equal(got, np.load(tmp_path / "q" / "predictions.npy"))


def test_evaluate_tracks_on_the_tracks_a_released_head_shares(tmp_path, imported):
    """Table 1 for released weights: only the data's tracks the model predicts."""
    from flashrna.data import write_shard

    borzoi = TrackTable.read(fixture_path("borzoi/targets_human.txt.gz"))
    released = TrackTable.read(imported / "targets-human.txt")
    dnase = np.flatnonzero(
        np.isin(borzoi.identifier, released.identifier) & (borzoi.assay == "DNASE")
    )
    atac = np.flatnonzero(
        np.isin(borzoi.identifier, released.identifier) & (borzoi.assay == "ATAC")
    )
    chip = np.flatnonzero(borzoi.assay == "CHIP")
    data_tracks = borzoi.take([chip[0], dnase[0], atac[0]])
    rng = np.random.default_rng(0)
    sequences = np.load(official("input.npy"))
    targets = rng.gamma(0.5, 2.0, (2, 128, 3)).astype(np.float16)
    windows = pd.DataFrame({"chrom": "chr1", "start": [2048, 20_048], "end": [6144, 24_144]})
    write_shard(
        tmp_path / "s", sequences, targets, windows.assign(label="fold3"), data_tracks, "human"
    )
    argv = ["evaluate-tracks", "--shards", str(tmp_path / "s"), "--model", str(imported)]
    argv += ["--out", str(tmp_path / "e"), "--num-workers", "0", "--device", "cpu"]
    assert main(argv) == 1  # the released head has no such ChIP track ...
    assert main([*argv, "--shared-tracks"]) == 1  # ... and it was built for 524,288 bp
    assert main([*argv, "--shared-tracks", "--allow-length"]) == 0
    result = pd.read_csv(tmp_path / "e" / "tracks.csv")
    assert list(result["identifier"]) == list(data_tracks.identifier[1:])
    prediction = predict(load_model(imported), sequences, "human").numpy()[:, 64:192]
    columns = [list(released.identifier).index(i) for i in data_tracks.identifier[1:]]
    x = prediction[..., columns].reshape(-1, 2).astype(np.float64)
    y = targets[..., 1:].astype(np.float64).reshape(-1, 2)
    expected = [np.corrcoef(x[:, k], y[:, k])[0, 1] for k in range(2)]
    np.testing.assert_allclose(result["pearson_squashed"], expected, rtol=1e-4, atol=1e-6)


def test_a_repeated_released_identifier_is_refused_as_one_output(imported):
    """The released human table repeats ontology identifiers; asking for one as a single
    output column is ambiguous and named, the others map to their own columns."""
    model = load_track_model([imported])
    table = model.tracks
    repeated = table.identifier[pd.Series(table.identifier).duplicated().to_numpy()]
    assert "CL:0000127+" in set(repeated)
    with pytest.raises(FlashRNAError, match=r"CL:0000127\+ name several outputs"):
        model.columns(["CL:0000127+"])
    unique = [i for i in table.identifier if i not in set(repeated)][:3]
    assert list(model.columns(unique)) == [list(table.identifier).index(i) for i in unique]


def test_finetune_starts_from_a_checkpoint(tmp_path, monkeypatch, capsys):
    import yaml

    monkeypatch.setenv("FLASHRNA_CACHE", str(tmp_path / "cache"))
    checkpoint = str(official("official-tiny.ckpt"))
    argv = ["finetune", "chip", "--model", checkpoint, "--shards", "a", "--print-config"]
    assert main(argv) == 0
    init = yaml.safe_load(capsys.readouterr().out)["model"]["init"]
    assert read_model_description(init)["source"]["checkpoint"] == checkpoint
