"""Borzoi TFRecords -> shards (`flashrna convert`), one job per TFRecord file: the training
tracks of each species, and the human ChIP-seq tracks for fine-tuning."""


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
        label=r"fold\d+",
        index=r"\d+",
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


rule convert_chip:
    input:
        record=f"{DATA}/borzoi/{HUMAN}/tfrecords/{{label}}.record.tsv",
        bed=f"{DATA}/borzoi/{HUMAN}/sequences.bed",
        targets=f"{DATA}/borzoi/{HUMAN}/targets.txt",
    output:
        directory(f"{RESULTS}/chip_shards/{HUMAN}/{{label}}-{{index}}"),
    log:
        f"{LOGS}/convert_chip/{{label}}-{{index}}.log",
    wildcard_constraints:
        label=r"fold\d+",
        index=r"\d+",
    conda:
        "../envs/flashrna.yaml"
    resources:
        **resources("convert"),
    params:
        tfrecord=lambda wc: f"{DATA}/borzoi/{HUMAN}/tfrecords/{wc.label}-{wc.index}.tfr",
        per_file=DL.get("records_per_file", 16),
    shell:
        "flashrna convert {params.tfrecord:q} --bed {input.bed:q} --targets {input.targets:q} "
        "--records-per-file {params.per_file} --assays CHIP --out {output:q} >> {log:q} 2>&1"
