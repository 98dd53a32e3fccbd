"""Downloads (manifest-driven, resumable; `flashrna download`) and the demo mirror."""


localrules:
    download_windows,
    download_tfrecords,
    download_genome,
    download_annotation,
    download_eqtls,
    download_saluki,
    download_ribonn,


if DL.get("generate_demo"):

    localrules:
        demo_data,

    rule demo_data:
        output:
            f"{DL['source_root']}/.flashrna-demo",
        log:
            f"{LOGS}/download/demo_data.log",
        conda:
            "../envs/flashrna.yaml"
        params:
            mirror=lambda wc, output: str(Path(output[0]).parent),
        shell:
            "flashrna demo-data --out {params.mirror:q} >> {log:q} 2>&1"


checkpoint download_windows:
    input:
        demo_mirror(),
    output:
        bed=f"{DATA}/borzoi/{{genome}}/sequences.bed",
        statistics=f"{DATA}/borzoi/{{genome}}/statistics.json",
        targets=f"{DATA}/borzoi/{{genome}}/targets.txt",
    log:
        f"{LOGS}/download/windows-{{genome}}.log",
    conda:
        "../envs/download.yaml"
    resources:
        **resources("download"),
    params:
        args=download_args(),
        only=lambda wc: " ".join(
            option("--only", f"borzoi/{wc.genome}/{name}")
            for name in ("sequences.bed", "statistics.json", "targets.txt")
        ),
    shell:
        "flashrna download {params.args} {params.only} >> {log:q} 2>&1"


rule download_tfrecords:
    input:
        demo_mirror(),
        bed=rules.download_windows.output.bed,
    output:
        f"{DATA}/borzoi/{{genome}}/tfrecords/{{label}}.record.tsv",
    log:
        f"{LOGS}/download/tfrecords-{{genome}}-{{label}}.log",
    wildcard_constraints:
        label=r"fold\d+",
    conda:
        "../envs/download.yaml"
    resources:
        **resources("download"),
    params:
        args=download_args(),
        derive=derive_option,
    shell:
        "flashrna download {params.args} {params.derive} "
        "--only 'borzoi/{wildcards.genome}/tfrecords/{wildcards.label}-*' --record {output:q} "
        ">> {log:q} 2>&1"


rule download_genome:
    input:
        demo_mirror(),
    output:
        fasta=f"{DATA}/genome/{{genome}}.ml.fa",
        fai=f"{DATA}/genome/{{genome}}.ml.fa.fai",
    log:
        f"{LOGS}/download/genome-{{genome}}.log",
    conda:
        "../envs/download.yaml"
    resources:
        **resources("download"),
    params:
        args=download_args(),
    shell:
        "flashrna download {params.args} --only 'genome/{wildcards.genome}.ml.fa.gz' "
        ">> {log:q} 2>&1"


rule download_annotation:
    input:
        demo_mirror(),
    output:
        f"{DATA}/genes/gencode41_basic_nort.gtf",
    log:
        f"{LOGS}/download/annotation.log",
    conda:
        "../envs/download.yaml"
    resources:
        **resources("download"),
    params:
        args=download_args(),
    shell:
        "flashrna download {params.args} --only 'genes/*' >> {log:q} 2>&1"


rule download_eqtls:
    input:
        demo_mirror(),
    output:
        f"{DATA}/eqtl/GTEx_49tissues_release1.tsv",
    log:
        f"{LOGS}/download/eqtls.log",
    conda:
        "../envs/download.yaml"
    resources:
        **resources("download"),
    params:
        args=download_args(),
    shell:
        "flashrna download {params.args} --only 'eqtl/*' >> {log:q} 2>&1"


rule download_saluki:
    input:
        demo_mirror(),
    output:
        f"{DATA}/saluki/record.tsv",
    log:
        f"{LOGS}/download/saluki.log",
    conda:
        "../envs/download.yaml"
    resources:
        **resources("download"),
    params:
        args=download_args(),
    shell:
        "flashrna download {params.args} --only 'saluki/*' --record {output:q} >> {log:q} 2>&1"


rule download_ribonn:
    input:
        demo_mirror(),
    output:
        f"{DATA}/ribonn/te_human.tsv",
    log:
        f"{LOGS}/download/ribonn.log",
    conda:
        "../envs/download.yaml"
    resources:
        **resources("download"),
    params:
        args=download_args(),
    shell:
        "flashrna download {params.args} --only 'ribonn/*' >> {log:q} 2>&1"
