"""Config validation and the helpers the rule files share (no rules here)."""

import copy
import re
import shlex
from pathlib import Path

import yaml
from snakemake.utils import validate

from flashrna.data.splits import split_of
from flashrna.download import fold_sizes, read_manifest, tfrecord_names
from flashrna.training.config import load_config
from flashrna.utils import FlashRNAError, merge_config

validate(config, schema="../schemas/config.schema.yaml")

REPO = Path(workflow.basedir).parent
# Jobs run `flashrna <step>` from this checkout: a conda env (workflow/envs/*.yaml) holds the
# dependencies and needs no install of the package (the function shadows an installed console
# script on purpose, so a job always runs the code of this checkout).
shell.prefix(
    f'set -euo pipefail; export PYTHONPATH={shlex.quote(str(REPO))}:"${{{{PYTHONPATH:-}}}}"; '
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
HUMAN = SPECIES["human"]["genome"]
MEMBERS = list(range(config["train"]["members"]))
REPLICATES = MEMBERS[: config["train"]["replicates"]]
ENSEMBLE_SIZES = sorted(config["ensemble"]["sizes"])
TEACHER = ENSEMBLE_SIZES[-1]
BASELINES = (
    [
        f"{b}{i}"
        for b in ("borzoi", "flashzoi")
        for i in range(config["baselines"].get("replicates", 4))
    ]
    if config["baselines"]["enabled"]
    else []
)
# The released weights (config published): released<k>, their ensemble, released-distilled.
PUBLISHED = config.get("published") or {}
RELEASED = [f"released{k}" for k in range(len(PUBLISHED.get("replicates") or []))]
RELEASED_ENSEMBLE = [f"released-ensemble{len(RELEASED)}"] if len(RELEASED) > 1 else []
RELEASED_DISTILLED = ["released-distilled"] if PUBLISHED.get("distilled") else []
TRACK_MODELS = [*(f"member{m}" for m in REPLICATES), *BASELINES, *RELEASED]
EQTL_MODELS = [
    *(f"member{m}" for m in REPLICATES),
    *(f"ensemble{n}" for n in ENSEMBLE_SIZES if n > 1),
    "distilled",
    *BASELINES,
    *RELEASED,
    *RELEASED_ENSEMBLE,
    *RELEASED_DISTILLED,
]
CHIP_MODES = config["finetune"]["chip"]["modes"]
PRETRAINED = f"{RESULTS}/models/member0/model"  # the trunk that is fine-tuned
GTEX_TRACKS = f"{RESULTS}/eval/targets_gtex.txt"  # score-variants --tracks

if config["train"]["replicates"] > config["train"]["members"]:
    raise ValueError("config train.replicates must not exceed train.members")
if TEACHER > config["train"]["members"]:
    raise ValueError(f"config ensemble.sizes: {TEACHER} exceeds train.members")


def resources(kind):
    """The resources of a kind of job (config resources.<kind>): runtime (minutes), mem_mb,
    and gpu for GPU jobs."""
    spec = config["resources"][kind]
    out = {"runtime": spec["runtime"], "mem_mb": spec["mem_mb"]}
    if spec.get("gpu"):
        out["gpu"] = spec["gpu"]
    return out


def threads(kind):
    return config["resources"][kind].get("threads", 1)


def option(flag, *values):
    """`flag value...` with every value shell-quoted (config values may hold spaces or `$`)."""
    return " ".join([flag, *(shlex.quote(str(v)) for v in values)])


SCHEMA = yaml.safe_load(
    Path(workflow.source_path("../schemas/config.schema.yaml")).read_text()
)


def step_options(path, step):
    """`--key value` of the keys of config section `path` (dotted, e.g. "evaluate.eqtl") that the
    schema's `x-options` names for `flashrna <step>`: the one declaration of which config key is
    which option (a test checks each against the step's parser). None values are left out, True
    is a bare flag, False nothing, a list repeats the value; every value is shell-quoted.
    """
    node, section = SCHEMA, config
    for part in path.split("."):
        node, section = node["properties"][part], (section or {}).get(part)
    parts = []
    for key in node["x-options"][step]:
        value = (section or {}).get(key)
        if value is None or value is False:
            continue
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            parts.append(flag)
        elif isinstance(value, list):
            parts.append(option(flag, *value))
        else:
            parts.append(option(flag, value))
    return " ".join(parts)


def download_args():
    """The options every download job shares."""
    args = [
        option("--manifest", DL["manifest"]),
        option("--data-dir", DATA),
        option("--tool", DL["tool"]),
    ]
    if DL.get("source_root"):
        args.append(option("--source-root", DL["source_root"]))
    if DL.get("billing_project"):
        args.append(option("--billing-project", DL["billing_project"]))
    args += [option("--requester-pays", p) for p in DL.get("requester_pays", [])]
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
    bed = f"{DATA}/borzoi/{wildcards.genome}/sequences.bed"
    return option("--derive", f"{wildcards.genome}={bed}")


def shards(genome, splits=("train", "valid", "test"), kind="shards"):
    """Converted shard directories of a genome in the given splits."""
    return [
        f"{RESULTS}/{kind}/{genome}/{name}"
        for name in tfrecords(genome)
        if split_of(name.split("-")[0]) in splits
    ]


def all_shards(wildcards=None):
    return [s for g in GENOMES for s in shards(g)]


# -- Training configs ---------------------------------------------------------------------


def checked_train_config(cfg, where, over=None):
    """`cfg` (with the mapping `over` merged over it) if `flashrna train` accepts it: every key
    known, valid choices; else a clear error naming the config key, before any job runs.
    """
    try:
        if over:
            cfg = merge_config(load_config(overrides=copy.deepcopy(cfg)), over, where)
        load_config(overrides=copy.deepcopy(cfg))
    except FlashRNAError as err:
        # The step names a key of its own config ("config train.schedule", "--set.train");
        # the workflow user wrote it under `where` (train.config, distill.config, ...).
        message = str(err).replace("--set", where, 1)
        if message.startswith("config "):
            message = f"{where}.{message.removeprefix('config ')}"
        raise ValueError(f"config {message}") from None
    return cfg


def members_config():
    """The `flashrna train` config of the members: config train.config, the model preset and
    each species' shards, assays and genome."""
    cfg = copy.deepcopy(config["train"]["config"])
    cfg.setdefault("model", {})["preset"] = config["model"]["preset"]
    species = cfg.setdefault("data", {}).setdefault("species", {})
    for name, spec in SPECIES.items():
        species[name] = {
            "shards": f"{RESULTS}/shards/{spec['genome']}",
            "assays": spec["assays"],
            "genome": f"{DATA}/genome/{spec['genome']}.ml.fa",
        }
    return checked_train_config(cfg, "train.config")


def student_config():
    """The members' config with config distill.config over it."""
    return checked_train_config(
        members_config(), "distill.config", config["distill"]["config"]
    )


def chip_config():
    """ChIP fine-tuning: config train.config without its species (the run's only head is the
    new one) and config finetune.chip.config over it; `flashrna finetune chip` adds the rest.
    """
    cfg = copy.deepcopy(config["train"]["config"])
    cfg.get("data", {}).pop("species", None)
    extra = config["finetune"]["chip"].get("config") or {}
    return checked_train_config(cfg, "finetune.chip.config", extra)


# The run configs the training steps read, checked now (a bad key stops the workflow before any
# job); the rule run_config (train.smk) writes them, so a dry run writes nothing.
RUN_CONFIGS = {
    "train": members_config(),
    "distill": student_config(),
    "finetune-chip": chip_config(),
}
TRAIN_CONFIG = f"{RESULTS}/configs/train.yaml"
DISTILL_CONFIG = f"{RESULTS}/configs/distill.yaml"
CHIP_CONFIG = f"{RESULTS}/configs/finetune-chip.yaml"


# -- Models behind an evaluated name -----------------------------------------------------------


def model_dirs(name):
    """Model directories behind an evaluated model name: memberN, ensembleN (members 0..N-1),
    distilled, releasedN and released-distilled (imported published checkpoints),
    released-ensembleN; none for a baseline (borzoiN, flashzoiN: borzoi-pytorch's)."""
    if name.startswith("member") or re.fullmatch(r"released(\d+|-distilled)", name):
        return [f"{RESULTS}/models/{name}/model"]
    if name.startswith("ensemble"):
        return [f"{RESULTS}/models/member{m}/model" for m in range(int(name[8:]))]
    if name.startswith("released-ensemble"):
        return [f"{RESULTS}/models/released{k}/model" for k in range(int(name[17:]))]
    if name == "distilled":
        return [f"{RESULTS}/models/distilled/model"]
    return []


def published_checkpoint(wildcards):
    """The downloaded checkpoint behind releasedN / released-distilled (config published)."""
    if wildcards.name == "released-distilled":
        return PUBLISHED["distilled"]
    return PUBLISHED["replicates"][int(wildcards.name[8:])]


def model_files(wildcards):
    return [f"{d}/model.safetensors" for d in model_dirs(wildcards.model)]


def model_args(wildcards):
    """`--model DIR` per member of a model or ensemble (the mean of the members), `--model
    NAME` of a baseline (borzoi0 -> borzoi-0, weights from borzoi-pytorch)."""
    dirs = model_dirs(wildcards.model)
    if dirs:
        return " ".join(option("--model", d) for d in dirs)
    kind = wildcards.model.rstrip("0123456789")
    return option("--model", f"{kind}-{wildcards.model[len(kind):]}")


# -- input functions of the rule files ------------------------------------------------------


def tfrecord_path(wildcards):
    return f"{DATA}/borzoi/{wildcards.genome}/tfrecords/{wildcards.label}-{wildcards.index}.tfr"


def genome_inputs(wildcards):
    return [f"{DATA}/genome/{g}.ml.fa" for g in GENOMES]


def teacher_inputs(wildcards):
    """Training and validation shards of every genome (the windows the teacher predicts)."""
    return [s for g in GENOMES for s in shards(g, ("train", "valid"))]


def human_test_shards(wildcards):
    return shards(HUMAN, ("test",))


def chip_shards(wildcards):
    return shards(HUMAN, kind="chip_shards")


def assays_of(genome):
    return next(s["assays"] for s in SPECIES.values() if s["genome"] == genome)


def heads_of(run):
    """The track tables a finished training run's model/ holds: targets-<head>.txt."""
    return [f"{run}/model/targets-{name}.txt" for name in SPECIES]
