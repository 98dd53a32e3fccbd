"""Flashzoi's benchmarks (Hingerl et al. 2025, Fig. 2) for every evaluated model: eQTL
prioritisation against distance-matched negatives, CRISPRi enhancer-gene pairs from input
gradients, Variant-FlowFISH PPIF edits (beside Table 2's per-tissue eQTL Spearman), the Flashzoi
figure and table, and input x gradient attributions of chosen genes (`flashrna attribute`).

Sources (manifest destinations under the data directory): qtl/eqtl/<tissue>_{pos,neg}.vcf,
crispri/EPCrisprBenchmark_ensemble_data_GRCh38.tsv.gz, flowfish/variant_flowfish.tsv (a manual
download) and liftover/hg19ToHg38.over.chain.gz.
"""

FZ = config["flashzoi"]
FZ_MODELS = FZ.get("models") or EQTL_MODELS
FZ_VCFS = [
    f"{DATA}/{r.destination}"
    for r in MANIFEST
    if r.destination.startswith("qtl/eqtl/") and r.destination.endswith(".vcf")
]
FZ_CRISPRI = f"{DATA}/crispri/EPCrisprBenchmark_ensemble_data_GRCh38.tsv.gz"
FZ_FLOWFISH = f"{DATA}/flowfish/variant_flowfish.tsv"
FZ_CHAIN = f"{DATA}/liftover/hg19ToHg38.over.chain.gz"
FZ_ATTRIBUTE = FZ.get("attribute") or {}
FZ_ATTRIBUTE_MODEL = FZ_ATTRIBUTE.get("model") or FZ_MODELS[0]
FZ_MODEL_PATTERN = r"member\d+|ensemble\d+|distilled|borzoi\d|flashzoi\d|released(\d+|-ensemble\d+|-distilled)"
FZ_SERIES = (
    f"--replicates {' '.join(m for m in FZ_MODELS if m.startswith('member'))} "
    f"--ensembles {' '.join(m for m in FZ_MODELS if m.startswith('ensemble'))} "
    f"--distilled {' '.join(m for m in FZ_MODELS if m == 'distilled')} "
    f"--borzoi {' '.join(m for m in FZ_MODELS if m.startswith('borzoi'))} "
    f"--flashzoi {' '.join(m for m in FZ_MODELS if m.startswith('flashzoi'))}"
)
FZ_FIGURE_FILES = [
    *(f"{RESULTS}/figures/flashzoi_benchmarks.{ext}" for ext in ("png", "pdf", "csv")),
    *(
        f"{RESULTS}/tables/flashzoi_benchmarks.{ext}"
        for ext in ("html", "md", "csv", "tex")
    ),
    f"{RESULTS}/tables/flashzoi_tissues.csv",
]
FLASHZOI_FILES = [
    *FZ_FIGURE_FILES,
    *(
        [f"{RESULTS}/attribution/{FZ_ATTRIBUTE_MODEL}/summary.json"]
        if FZ_ATTRIBUTE.get("genes")
        else []
    ),
]


localrules:
    download_prioritisation,
    download_crispri,
    download_flowfish,


rule download_prioritisation:
    input:
        demo_mirror(),
    output:
        FZ_VCFS,
    log:
        f"{LOGS}/download/prioritisation.log",
    conda:
        "../envs/download.yaml"
    resources:
        **resources("download"),
    params:
        args=download_args(),
    shell:
        "flashrna download {params.args} --only 'qtl/eqtl/*' >> {log:q} 2>&1"


rule download_crispri:
    input:
        demo_mirror(),
    output:
        FZ_CRISPRI,
    log:
        f"{LOGS}/download/crispri.log",
    conda:
        "../envs/download.yaml"
    resources:
        **resources("download"),
    params:
        args=download_args(),
    shell:
        "flashrna download {params.args} --only 'crispri/*' >> {log:q} 2>&1"


rule download_flowfish:
    input:
        demo_mirror(),
    output:
        table=FZ_FLOWFISH,
        chain=FZ_CHAIN,
    log:
        f"{LOGS}/download/flowfish.log",
    conda:
        "../envs/download.yaml"
    resources:
        **resources("download"),
    params:
        args=download_args(),
    shell:
        "flashrna download {params.args} --only 'flowfish/*' --only 'liftover/*' >> {log:q} 2>&1"


rule eqtl_prioritisation:
    input:
        model_files,
        vcfs=FZ_VCFS,
        fasta=f"{DATA}/genome/{HUMAN}.ml.fa",
    output:
        summary=f"{RESULTS}/eval/prioritisation/{{model}}/summary.json",
        tissues=f"{RESULTS}/eval/prioritisation/{{model}}/tissues.csv",
        variants=f"{RESULTS}/eval/prioritisation/{{model}}/variants.csv",
    log:
        f"{LOGS}/eqtl_prioritisation/{{model}}.log",
    benchmark:
        f"{BENCH}/eqtl_prioritisation/{{model}}.tsv"
    wildcard_constraints:
        model=FZ_MODEL_PATTERN,
    conda:
        "../envs/flashrna.yaml"
    threads: threads("evaluate")
    resources:
        **resources("evaluate"),
    params:
        model=model_args,
        vcf_dir=lambda wc, input: str(Path(input.vcfs[0]).parent),
        out=lambda wc, output: str(Path(output.summary).parent),
        options=step_options("flashzoi.prioritisation", "eqtl-prioritisation"),
        tissue_map=(
            option("--tissue-map", EQTL["tissue_map"])
            if EQTL.get("tissue_map")
            else ""
        ),
    shell:
        "flashrna eqtl-prioritisation {params.model} --head human "
        "--vcf-dir {params.vcf_dir:q} --fasta {input.fasta:q} {params.tissue_map} "
        "{params.options} --out {params.out:q} >> {log:q} 2>&1"


rule crispri_benchmark:
    input:
        model_files,
        pairs=FZ_CRISPRI,
        fasta=f"{DATA}/genome/{HUMAN}.ml.fa",
        gtf=f"{DATA}/genes/gencode41_basic_nort.gtf",
    output:
        summary=f"{RESULTS}/eval/crispri/{{model}}/summary.json",
        metrics=f"{RESULTS}/eval/crispri/{{model}}/metrics.csv",
        pairs=f"{RESULTS}/eval/crispri/{{model}}/pairs.csv",
    log:
        f"{LOGS}/crispri_benchmark/{{model}}.log",
    benchmark:
        f"{BENCH}/crispri_benchmark/{{model}}.tsv"
    wildcard_constraints:
        model=FZ_MODEL_PATTERN,
    conda:
        "../envs/flashrna.yaml"
    threads: threads("evaluate")
    resources:
        **resources("evaluate"),
    params:
        model=model_args,
        out=lambda wc, output: str(Path(output.summary).parent),
        options=step_options("flashzoi.crispri", "crispri-benchmark"),
    shell:
        "flashrna crispri-benchmark {params.model} --head human --pairs {input.pairs:q} "
        "--fasta {input.fasta:q} --gtf {input.gtf:q} {params.options} --out {params.out:q} "
        ">> {log:q} 2>&1"


rule flowfish_benchmark:
    input:
        model_files,
        table=FZ_FLOWFISH,
        chain=FZ_CHAIN,
        fasta=f"{DATA}/genome/{HUMAN}.ml.fa",
        gtf=f"{DATA}/genes/gencode41_basic_nort.gtf",
    output:
        summary=f"{RESULTS}/eval/flowfish/{{model}}/summary.json",
        metrics=f"{RESULTS}/eval/flowfish/{{model}}/metrics.csv",
        edits=f"{RESULTS}/eval/flowfish/{{model}}/edits.csv",
    log:
        f"{LOGS}/flowfish_benchmark/{{model}}.log",
    benchmark:
        f"{BENCH}/flowfish_benchmark/{{model}}.tsv"
    wildcard_constraints:
        model=FZ_MODEL_PATTERN,
    conda:
        "../envs/flashrna.yaml"
    threads: threads("evaluate")
    resources:
        **resources("evaluate"),
    params:
        model=model_args,
        out=lambda wc, output: str(Path(output.summary).parent),
        options=step_options("flashzoi.flowfish", "flowfish-benchmark"),
    shell:
        "flashrna flowfish-benchmark {params.model} --head human --table {input.table:q} "
        "--chain {input.chain:q} --fasta {input.fasta:q} --gtf {input.gtf:q} {params.options} "
        "--out {params.out:q} >> {log:q} 2>&1"


rule attribute:
    input:
        model_files,
        fasta=f"{DATA}/genome/{HUMAN}.ml.fa",
        gtf=f"{DATA}/genes/gencode41_basic_nort.gtf",
    output:
        f"{RESULTS}/attribution/{{model}}/summary.json",
    log:
        f"{LOGS}/attribute/{{model}}.log",
    benchmark:
        f"{BENCH}/attribute/{{model}}.tsv"
    wildcard_constraints:
        model=FZ_MODEL_PATTERN,
    conda:
        "../envs/flashrna.yaml"
    threads: threads("evaluate")
    resources:
        **resources("evaluate"),
    params:
        model=model_args,
        out=lambda wc, output: str(Path(output[0]).parent),
        options=step_options("flashzoi.attribute", "attribute"),
    shell:
        "flashrna attribute {params.model} --head human --fasta {input.fasta:q} "
        "--gtf {input.gtf:q} {params.options} --out {params.out:q} >> {log:q} 2>&1"


rule flashzoi_figure:
    input:
        expand(f"{RESULTS}/eval/eqtl/{{model}}/tissues.csv", model=FZ_MODELS),
        expand(f"{RESULTS}/eval/prioritisation/{{model}}/tissues.csv", model=FZ_MODELS),
        expand(f"{RESULTS}/eval/crispri/{{model}}/metrics.csv", model=FZ_MODELS),
        expand(f"{RESULTS}/eval/flowfish/{{model}}/metrics.csv", model=FZ_MODELS),
    output:
        report(
            FZ_FIGURE_FILES[0],
            caption="../report/flashzoi.rst",
            category="Flashzoi's benchmarks",
        ),
        FZ_FIGURE_FILES[1:],
    log:
        f"{LOGS}/report/flashzoi.log",
    conda:
        "../envs/plot.yaml"
    resources:
        **resources("report"),
    params:
        results=lambda wc, output: str(Path(output[0]).parents[1]),
        out=lambda wc, output: str(Path(output[0]).parent),
        tables=lambda wc, output: str(Path(output[3]).parent),
        series=FZ_SERIES,
        footer=" ".join(
            [
                option("--run-name", config["run"]),
                option("--config", REPORT_CONFIG),
                option("--data", REPORT_DATA),
            ]
        ),
    shell:
        "flashrna report flashzoi --results {params.results:q} --out {params.out:q} "
        "--tables {params.tables:q} {params.series} {params.footer} >> {log:q} 2>&1"
