"""Borzoi TFRecords -> shards (`flashrna convert`), one job per TFRecord file: the training
tracks of each species and, from the same read of each human file, the ChIP-seq tracks for
fine-tuning (so the ~3,470 human files are decompressed once, not twice). The jobs belong to
the group `convert`: on a cluster, `--group-components convert=N` (the SLURM profile sets it)
submits N conversions as one scheduler job instead of ~7,000 jobs of a minute each."""


rule convert:
    input:
        record=f"{DATA}/borzoi/{{genome}}/tfrecords/{{label}}.record.tsv",
        bed=f"{DATA}/borzoi/{{genome}}/sequences.bed",
        targets=f"{DATA}/borzoi/{{genome}}/targets.txt",
    output:
        directory(f"{RESULTS}/shards/{{genome}}/{{label}}-{{index}}"),
    log:
        f"{LOGS}/convert/{{genome}}-{{label}}-{{index}}.log",
    wildcard_constraints:
        genome=rf"(?!{HUMAN}/)[^/]+",  # the human files: convert_human
        label=r"fold\d+",
        index=r"\d+",
    group:
        "convert"
    conda:
        "../envs/flashrna.yaml"
    resources:
        **resources("convert"),
    params:
        tfrecord=tfrecord_path,
        assays=lambda wc: " ".join(assays_of(wc.genome)),
        per_file=DL.get("records_per_file", 16),
    shell:
        "flashrna convert {params.tfrecord:q} --bed {input.bed:q} --targets {input.targets:q} "
        "--records-per-file {params.per_file} --assays {params.assays} --out {output:q} "
        ">> {log:q} 2>&1"


rule convert_human:
    input:
        record=f"{DATA}/borzoi/{HUMAN}/tfrecords/{{label}}.record.tsv",
        bed=f"{DATA}/borzoi/{HUMAN}/sequences.bed",
        targets=f"{DATA}/borzoi/{HUMAN}/targets.txt",
    output:
        shards=directory(f"{RESULTS}/shards/{HUMAN}/{{label}}-{{index}}"),
        chip=directory(f"{RESULTS}/chip_shards/{HUMAN}/{{label}}-{{index}}"),
    log:
        f"{LOGS}/convert/{HUMAN}-{{label}}-{{index}}.log",
    wildcard_constraints:
        label=r"fold\d+",
        index=r"\d+",
    group:
        "convert"
    conda:
        "../envs/flashrna.yaml"
    resources:
        **resources("convert"),
    params:
        tfrecord=lambda wc: f"{DATA}/borzoi/{HUMAN}/tfrecords/{wc.label}-{wc.index}.tfr",
        assays=lambda wc: " ".join(assays_of(HUMAN)),
        per_file=DL.get("records_per_file", 16),
    shell:
        "flashrna convert {params.tfrecord:q} --bed {input.bed:q} --targets {input.targets:q} "
        "--records-per-file {params.per_file} --assays {params.assays} "
        "--out {output.shards:q} --extra-out {output.chip:q} --extra-assays CHIP "
        ">> {log:q} 2>&1"
