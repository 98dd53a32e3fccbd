"""Evaluation on the held-out fold and on GTEx eQTLs: track Pearson per replicate (Table 1) and
per ChIP fine-tuning mode (Table 3), eQTL Spearman for single models, ensembles and the distilled
model (Table 2, Figure 2), and the speed comparison (Figure 1)."""


rule evaluate_tracks:
    input:
        test_shards,
        model_files,
    output:
        f"{RESULTS}/eval/tracks/{{model}}/summary.json",
    log:
        f"{LOGS}/evaluate_tracks/{{model}}.log",
    benchmark:
        f"{BENCH}/evaluate_tracks/{{model}}.tsv"
    conda:
        "../../envs/flashrna.yaml"
    threads: threads("evaluate")
    resources:
        **resources("evaluate"),
    params:
        model=model_args,
        shards=" ".join(f"{RESULTS}/shards/{g}" for g in GENOMES),
        split=config["evaluate"]["tracks"].get("split", "test"),
        out=lambda wc, output: str(Path(output[0]).parent),
        extra=options(config["evaluate"]["tracks"]),
    shell:
        "flashrna evaluate-tracks {params.model} --shards {params.shards} "
        "--split {params.split} --out {params.out} {params.extra} > {log} 2>&1"


rule evaluate_chip:
    input:
        lambda wc: shards(HUMAN, ("test",), kind="chip_shards"),
        model=f"{RESULTS}/finetune/chip-{{mode}}/model/model.safetensors",
    output:
        f"{RESULTS}/eval/chip/{{mode}}/summary.json",
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
        out=lambda wc, output: str(Path(output[0]).parent),
    shell:
        "flashrna evaluate-tracks --model {params.model} --shards {params.shards} "
        "--split test --out {params.out} > {log} 2>&1"


rule score_variants:
    input:
        model_files,
        eqtls=f"{DATA}/eqtl/GTEx_49tissues_release1.tsv",
        fasta=f"{DATA}/genome/{HUMAN}.ml.fa",
        gtf=f"{DATA}/genes/gencode41_basic_nort.gtf",
    output:
        f"{RESULTS}/eval/variants/{{model}}/scores.tsv",
    log:
        f"{LOGS}/score_variants/{{model}}.log",
    benchmark:
        f"{BENCH}/score_variants/{{model}}.tsv"
    conda:
        "../../envs/flashrna.yaml"
    threads: threads("evaluate")
    resources:
        **resources("evaluate"),
    params:
        model=model_args,
        out=lambda wc, output: str(Path(output[0]).parent),
        min_pip=config["evaluate"]["eqtl"]["min_pip"],
    shell:
        "flashrna score-variants {params.model} --eqtls {input.eqtls} --min-pip {params.min_pip} "
        "--fasta {input.fasta} --gtf {input.gtf} --out {params.out} > {log} 2>&1"


rule eqtl_benchmark:
    input:
        scores=f"{RESULTS}/eval/variants/{{model}}/scores.tsv",
        eqtls=f"{DATA}/eqtl/GTEx_49tissues_release1.tsv",
    output:
        f"{RESULTS}/eval/eqtl/{{model}}/summary.json",
    log:
        f"{LOGS}/eqtl_benchmark/{{model}}.log",
    conda:
        "../../envs/flashrna.yaml"
    resources:
        **resources("report"),
    params:
        out=lambda wc, output: str(Path(output[0]).parent),
        eqtl=config["evaluate"]["eqtl"],
        tissues=" ".join(
            f"{k}={v}" for k, v in config["evaluate"]["eqtl"]["tissues"].items()
        ),
    shell:
        "flashrna eqtl-benchmark --scores {input.scores} --eqtls {input.eqtls} "
        "--min-pip {params.eqtl[min_pip]} --min-variants {params.eqtl[min_variants]} "
        "--tissues {params.tissues} --out {params.out} > {log} 2>&1"
