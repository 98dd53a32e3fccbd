"""Config validation and the helpers the rule files share (no rules here)."""

from pathlib import Path

import yaml
from snakemake.utils import validate

from flashrna.download import fold_sizes, read_manifest, tfrecord_names

validate(config, schema="../schemas/config.schema.yaml")

REPO = Path(workflow.basedir).parent
# Jobs run `flashrna <step>` from this checkout: a conda env with the dependencies needs no
# install of the package (the function shadows an installed console script on purpose).
shell.prefix(
    f"set -euo pipefail; export PYTHONPATH='{REPO}':\"${{{{PYTHONPATH:-}}}}\"; "
    'flashrna() {{ python -m flashrna.cli "$@"; }}; '
)

DATA = config["data_dir"]
RESULTS = config["results_dir"]
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
DL = config["download"]
MANIFEST = read_manifest(DL["manifest"])
SPECIES = config["species"]
GENOMES = [s["genome"] for s in SPECIES.values()]
HUMAN = "hg38"
MEMBERS = list(range(config["train"]["members"]))
REPLICATES = MEMBERS[: config["train"]["replicates"]]
ENSEMBLE_SIZES = sorted(config["ensemble"]["sizes"])
TEACHER = ENSEMBLE_SIZES[-1]
BASELINES = (
    [
        f"{b}{i}"
        for b in ("borzoi", "flashzoi")
        for i in range(config["baselines"]["replicates"])
    ]
    if config["baselines"]["enabled"]
    else []
)
TRACK_MODELS = [*(f"member{m}" for m in REPLICATES), *BASELINES]
EQTL_MODELS = [
    *(f"member{m}" for m in REPLICATES),
    *(f"ensemble{n}" for n in ENSEMBLE_SIZES if n > 1),
    "distilled",
    *BASELINES,
]
CHIP_MODES = config["finetune"]["chip"]["modes"]
HALFLIFE_FOLDS = config["finetune"]["halflife"]["folds"]
TEST, VALID = "fold3", "fold4"
PRETRAINED = f"{RESULTS}/models/member0/model"  # the trunk that is fine-tuned

if config["train"]["replicates"] > config["train"]["members"]:
    raise ValueError("config train.replicates must not exceed train.members")
if TEACHER > config["train"]["members"]:
    raise ValueError(f"config ensemble.sizes: {TEACHER} exceeds train.members")


def resources(kind):
    """The resources of a kind of job (config resources.<kind>)."""
    spec = config["resources"][kind]
    out = {"runtime": spec["runtime"], "mem_mb": spec["mem_mb"]}
    if spec.get("gpu"):
        out["gpu"] = spec["gpu"]
    return out


def threads(kind):
    return config["resources"][kind].get("threads", 1)


def options(section):
    """`--key value` of a config `options` mapping (lists repeat the key)."""
    parts = []
    for key, value in (section or {}).get("options", {}).items():
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            parts.append(flag)
        elif value is False:
            continue
        else:
            for item in value if isinstance(value, list) else [value]:
                parts.append(f"{flag} {item}")
    return " ".join(parts)


def download_args():
    """The options every download job shares."""
    args = [
        f"--manifest {DL['manifest']}",
        f"--data-dir {DATA}",
        f"--tool {DL['tool']}",
    ]
    if DL.get("source_root"):
        args.append(f"--source-root {DL['source_root']}")
    if DL.get("billing_project"):
        args.append(f"--billing-project {DL['billing_project']}")
    args += [f"--requester-pays {p}" for p in DL.get("requester_pays", [])]
    return " ".join(args)


def demo_mirror():
    """The demo mirror's marker when the config generates it (else no input)."""
    if DL.get("generate_demo"):
        return f"{DL['source_root']}/.flashrna-demo"
    return []


# -- TFRecords: from the manifest, or derived from a downloaded window BED --------------------


def listed_tfrecords(genome):
    prefix = f"borzoi/{genome}/tfrecords/"
    return [
        r.destination[len(prefix) :]
        for r in MANIFEST
        if r.destination.startswith(prefix)
    ]


def tfrecords(genome):
    """`fold{k}-{i}` names of a genome's TFRecords. When the manifest does not list them (mm10
    before `flashrna download --derive/--refresh`), they follow from sequences.bed, fetched by the
    download_windows checkpoint."""
    names = listed_tfrecords(genome)
    if not names:
        bed = checkpoints.download_windows.get(genome=genome).output.bed
        names = tfrecord_names(fold_sizes(bed), DL.get("records_per_file", 16))
    return [n.removesuffix(".tfr") for n in names]


def derive_option(wildcards):
    if listed_tfrecords(wildcards.genome):
        return ""
    return f"--derive {wildcards.genome}={DATA}/borzoi/{wildcards.genome}/sequences.bed"


def shards(genome, splits=("train", "valid", "test"), kind="shards"):
    """Converted shard directories of a genome in the given splits."""
    out = []
    for name in tfrecords(genome):
        label = name.split("-")[0]
        split = "test" if label == TEST else "valid" if label == VALID else "train"
        if split in splits:
            out.append(f"{RESULTS}/{kind}/{genome}/{name}")
    return out


def all_shards(wildcards=None):
    return [s for g in GENOMES for s in shards(g)]


def train_config():
    """The `flashrna train` config: config train.config plus the workflow's data and model."""
    cfg = yaml.safe_load(yaml.safe_dump(config["train"]["config"])) or {}
    cfg.setdefault("model", {})["preset"] = config["model"]["preset"]
    species = cfg.setdefault("data", {}).setdefault("species", {})
    for name, spec in SPECIES.items():
        species[name] = {
            "shards": f"{RESULTS}/shards/{spec['genome']}",
            "assays": spec["assays"],
            "genome": f"{DATA}/genome/{spec['genome']}.ml.fa",
        }
    return cfg


def write_if_changed(path, text):
    """Write a derived config only when its content changes (so its mtime means something)."""
    path = Path(path)
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(path)


TRAIN_CONFIG = write_if_changed(
    f"{RESULTS}/configs/train.yaml", yaml.safe_dump(train_config(), sort_keys=False)
)


def model_dirs(name):
    """Model directories behind an evaluated model name: memberN, ensembleN, distilled; none
    for a baseline (borzoiN, flashzoiN: weights from borzoi-pytorch)."""
    if name.startswith("member"):
        return [f"{RESULTS}/models/{name}/model"]
    if name.startswith("ensemble"):
        return [f"{RESULTS}/models/member{m}/model" for m in range(int(name[8:]))]
    if name == "distilled":
        return [f"{RESULTS}/models/distilled/model"]
    return []


def model_files(wildcards):
    return [f"{d}/model.safetensors" for d in model_dirs(wildcards.model)]


def model_args(wildcards):
    """`--model DIR...` of a FlashRNA model or ensemble, `--baseline NAME` of a baseline."""
    dirs = model_dirs(wildcards.model)
    return f"--model {' '.join(dirs)}" if dirs else f"--baseline {wildcards.model}"


# -- input functions of the rule files ------------------------------------------------------


def tfrecord_path(wildcards):
    return f"{DATA}/borzoi/{wildcards.genome}/tfrecords/{wildcards.label}-{wildcards.index}.tfr"


def genome_inputs(wildcards):
    return [f"{DATA}/genome/{g}.ml.fa" for g in GENOMES]


def teacher_inputs(wildcards):
    """Training and validation shards of every genome (the windows the teacher predicts)."""
    return [s for g in GENOMES for s in shards(g, ("train", "valid"))]


def test_shards(wildcards):
    return [s for g in GENOMES for s in shards(g, ("test",))]


def chip_shards(wildcards):
    return shards(HUMAN, kind="chip_shards")


def assays_of(genome):
    return next(s["assays"] for s in SPECIES.values() if s["genome"] == genome)
