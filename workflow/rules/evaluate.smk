"""Evaluation on the held-out fold and on GTEx eQTLs: track Pearson of each replicate on the
human test windows (Table 1) and of each ChIP fine-tuning mode (Table 3); logSED on the GTEx RNA
tracks and the eQTL Spearman of single models, ensembles and the distilled model (Table 2,
Figure 2). GTEx tissues map to tracks through the package's table flashrna/data/gtex_tissues.tsv
(config evaluate.eqtl.tissue_map replaces it)."""

EQTL = config["evaluate"]["eqtl"]
EQTL_TABLE = f"{DATA}/eqtl/GTEx_49tissues_release1.tsv"


localrules:
    gtex_tracks,


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
        model=r"member\d+|borzoi\d|flashzoi\d",
    conda:
        "../../envs/flashrna.yaml"
    threads: threads("evaluate")
    resources:
        **resources("evaluate"),
    params:
        model=model_args,
        shards=f"{RESULTS}/shards/{HUMAN}",
        out=lambda wc, output: str(Path(output.summary).parent),
        options=cli_options(
            config["evaluate"]["tracks"],
            ("split", "batch_size", "num_workers", "max_windows"),
        ),
    shell:
        "flashrna evaluate-tracks {params.model} --head human --shards {params.shards} "
        "{params.options} --out {params.out} > {log} 2>&1"


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
        "../../envs/flashrna.yaml"
    threads: threads("evaluate")
    resources:
        **resources("evaluate"),
    params:
        model=lambda wc: f"{RESULTS}/finetune/chip-{wc.mode}/model",
        shards=f"{RESULTS}/chip_shards/{HUMAN}",
        out=lambda wc, output: str(Path(output.summary).parent),
        options=cli_options(
            config["evaluate"]["tracks"],
            ("split", "batch_size", "num_workers", "max_windows"),
        ),
    shell:
        "flashrna evaluate-tracks --model {params.model} --head chip "
        "--shards {params.shards} {params.options} --out {params.out} > {log} 2>&1"


rule gtex_tracks:
    input:
        f"{DATA}/borzoi/{HUMAN}/targets.txt",
    output:
        GTEX_TRACKS,
    log:
        f"{LOGS}/evaluate/gtex_tracks.log",
    conda:
        "../../envs/flashrna.yaml"
    shell:
        # The rows of the human track table whose identifier names GTEx (Borzoi's
        # targets_gtex.txt), keeping their channel numbers.
        "(awk -F '\\t' 'NR == 1 || index($2, \"GTEX\")' {input} > {output}.tmp && "
        '[ "$(wc -l < {output}.tmp)" -gt 1 ] || '
        '{{ echo "{input}: no track identifier contains GTEX" >&2; exit 1; }}; '
        "mv {output}.tmp {output}) > {log} 2>&1"


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
        model=r"member\d+|ensemble\d+|distilled|borzoi\d|flashzoi\d",
    conda:
        "../../envs/flashrna.yaml"
    threads: threads("evaluate")
    resources:
        **resources("evaluate"),
    params:
        model=model_args,
        out=lambda wc, output: str(Path(output.scores).parent),
        options=cli_options(
            EQTL,
            (
                "min_pip",
                "length",
                "crop_bins",
                "batch_size",
                "protocol",
                "units",
                "ensemble",
            ),
        ),
    shell:
        # Borzoi's sed.h5 layout: float16 logSEDs, as Borzoi's own benchmark reads them.
        "flashrna score-variants {params.model} --head human --eqtls {input.eqtls} "
        "--tracks {input.tracks} --stats logSED --format h5 --fasta {input.fasta} "
        "--gtf {input.gtf} {params.options} --out {params.out} > {log} 2>&1"


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
        model=r"member\d+|ensemble\d+|distilled|borzoi\d|flashzoi\d",
    conda:
        "../../envs/flashrna.yaml"
    threads: threads("report")
    resources:
        **resources("report"),
    params:
        out=lambda wc, output: str(Path(output.summary).parent),
        options=cli_options(
            EQTL, ("min_pip", "min_variants", "tissue_map", "protocol", "tissue_count")
        ),
    shell:
        "flashrna eqtl-benchmark --scores {input.scores} --eqtls {input.eqtls} "
        "{params.options} --out {params.out} > {log} 2>&1"
