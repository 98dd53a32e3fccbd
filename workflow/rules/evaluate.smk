"""Evaluation on the held-out fold and on GTEx eQTLs: track Pearson of each replicate on the
human test windows (Table 1) and of each ChIP fine-tuning mode (Table 3); logSED on the GTEx RNA
tracks and the eQTL Spearman of single models, ensembles and the distilled model (Table 2,
Figure 2). GTEx tissues map to tracks through the package's table flashrna/resources/gtex_tissues.tsv
(config evaluate.eqtl.tissue_map replaces it), or through a model's own gtex_tissue column (the
released weights). The released checkpoints (config published) are imported first and evaluated
like the members, Table 1 on the test tracks their human head shares."""

EQTL = config["evaluate"]["eqtl"]
EQTL_TABLE = f"{DATA}/eqtl/GTEx_49tissues_release1.tsv"


localrules:
    gtex_tracks,


rule import_published:
    input:
        published_checkpoint,
    output:
        f"{RESULTS}/models/{{name}}/model/model.safetensors",
    log:
        f"{LOGS}/import_published/{{name}}.log",
    wildcard_constraints:
        name=r"released\d+|released-distilled",
    conda:
        "../envs/flashrna.yaml"
    resources:
        **resources("report"),
    params:
        out=lambda wc, output: str(Path(output[0]).parent),
    shell:
        "flashrna import-model {input:q} --out {params.out:q} >> {log:q} 2>&1"


rule evaluate_tracks:
    input:
        human_test_shards,
        model_files,
    output:
        summary=f"{RESULTS}/eval/tracks/{{model}}/summary.json",
        assays=f"{RESULTS}/eval/tracks/{{model}}/assays.csv",
        tracks=f"{RESULTS}/eval/tracks/{{model}}/tracks.csv",
    log:
        f"{LOGS}/evaluate_tracks/{{model}}.log",
    benchmark:
        f"{BENCH}/evaluate_tracks/{{model}}.tsv"
    wildcard_constraints:
        model=r"member\d+|borzoi\d|flashzoi\d|released\d+",
    conda:
        "../envs/flashrna.yaml"
    threads: threads("evaluate")
    resources:
        **resources("evaluate"),
    params:
        model=lambda wc: model_args(wc)
        + (" --shared-tracks" if wc.model.startswith("released") else ""),
        shards=f"{RESULTS}/shards/{HUMAN}",
        out=lambda wc, output: str(Path(output.summary).parent),
        options=step_options("evaluate.tracks", "evaluate-tracks"),
    shell:
        "flashrna evaluate-tracks {params.model} --head human --shards {params.shards:q} "
        "{params.options} --out {params.out:q} >> {log:q} 2>&1"


rule evaluate_chip:
    input:
        lambda wc: shards(HUMAN, ("test",), kind="chip_shards"),
        model=f"{RESULTS}/finetune/chip-{{mode}}/model/model.safetensors",
    output:
        summary=f"{RESULTS}/eval/chip/{{mode}}/summary.json",
        assays=f"{RESULTS}/eval/chip/{{mode}}/assays.csv",
        tracks=f"{RESULTS}/eval/chip/{{mode}}/tracks.csv",
    log:
        f"{LOGS}/evaluate_chip/{{mode}}.log",
    benchmark:
        f"{BENCH}/evaluate_chip/{{mode}}.tsv"
    wildcard_constraints:
        mode="head|full",
    conda:
        "../envs/flashrna.yaml"
    threads: threads("evaluate")
    resources:
        **resources("evaluate"),
    params:
        model=lambda wc: f"{RESULTS}/finetune/chip-{wc.mode}/model",
        shards=f"{RESULTS}/chip_shards/{HUMAN}",
        out=lambda wc, output: str(Path(output.summary).parent),
        options=step_options("evaluate.tracks", "evaluate-tracks"),
    shell:
        "flashrna evaluate-tracks --model {params.model} --head chip "
        "--shards {params.shards:q} {params.options} --out {params.out:q} >> {log:q} 2>&1"


rule gtex_tracks:
    input:
        f"{DATA}/borzoi/{HUMAN}/targets.txt",
    output:
        GTEX_TRACKS,
    log:
        f"{LOGS}/evaluate/gtex_tracks.log",
    conda:
        "../envs/flashrna.yaml"
    shell:
        # The rows of the human track table whose identifier names GTEx (Borzoi's
        # targets_gtex.txt), keeping their channel numbers.
        "(awk -F '\\t' 'NR == 1 || index($2, \"GTEX\")' {input:q} > {output:q}.tmp && "
        '[ "$(wc -l < {output:q}.tmp)" -gt 1 ] || '
        '{{ echo {input:q}": no track identifier contains GTEX" >&2; exit 1; }}; '
        "mv {output:q}.tmp {output:q}) >> {log:q} 2>&1"


rule score_variants:
    input:
        model_files,
        eqtls=EQTL_TABLE,
        tracks=GTEX_TRACKS,
        fasta=f"{DATA}/genome/{HUMAN}.ml.fa",
        gtf=f"{DATA}/genes/gencode41_basic_nort.gtf",
    output:
        scores=f"{RESULTS}/eval/variants/{{model}}/sed.h5",
        tracks=f"{RESULTS}/eval/variants/{{model}}/tracks.tsv",
        skipped=f"{RESULTS}/eval/variants/{{model}}/skipped.tsv",
        summary=f"{RESULTS}/eval/variants/{{model}}/summary.json",
    log:
        f"{LOGS}/score_variants/{{model}}.log",
    benchmark:
        f"{BENCH}/score_variants/{{model}}.tsv"
    wildcard_constraints:
        model=r"member\d+|ensemble\d+|distilled|borzoi\d|flashzoi\d|released(\d+|-ensemble\d+|-distilled)",
    conda:
        "../envs/flashrna.yaml"
    threads: threads("evaluate")
    resources:
        **resources("evaluate"),
    params:
        model=model_args,
        out=lambda wc, output: str(Path(output.scores).parent),
        options=step_options("evaluate.eqtl", "score-variants"),
    shell:
        # Borzoi's sed.h5 layout: float16 logSEDs, as Borzoi's own benchmark reads them.
        "flashrna score-variants {params.model} --head human --eqtls {input.eqtls:q} "
        "--tracks {input.tracks:q} --stats logSED --format h5 --fasta {input.fasta:q} "
        "--gtf {input.gtf:q} "
        "{params.options} --out {params.out:q} >> {log:q} 2>&1"


rule eqtl_benchmark:
    input:
        rules.score_variants.output,
        eqtls=EQTL_TABLE,
        scores=rules.score_variants.output.scores,
        tissue_map=EQTL.get("tissue_map") or [],
    output:
        summary=f"{RESULTS}/eval/eqtl/{{model}}/summary.json",
        tissues=f"{RESULTS}/eval/eqtl/{{model}}/tissues.csv",
        eqtls=f"{RESULTS}/eval/eqtl/{{model}}/eqtls.csv",
    log:
        f"{LOGS}/eqtl_benchmark/{{model}}.log",
    wildcard_constraints:
        model=r"member\d+|ensemble\d+|distilled|borzoi\d|flashzoi\d|released(\d+|-ensemble\d+|-distilled)",
    conda:
        "../envs/flashrna.yaml"
    threads: threads("report")
    resources:
        **resources("report"),
    params:
        out=lambda wc, output: str(Path(output.summary).parent),
        options=step_options("evaluate.eqtl", "eqtl-benchmark"),
    shell:
        "flashrna eqtl-benchmark --scores {input.scores:q} --eqtls {input.eqtls:q} "
        "{params.options} --out {params.out:q} >> {log:q} 2>&1"
