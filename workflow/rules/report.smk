"""The paper's tables and figures (`flashrna report`, `flashrna bench compare`) from this run's
results, each marked for `snakemake --report` with a caption (workflow/report/) and a category.

Tables: results/<run>/tables/table{1-4}.{md,csv,tex,html}; figures: results/<run>/figures/
figure1.{png,pdf}, figure2.{png,pdf,csv}. The report shows the HTML tables and the PNG figures.
"""

import os

REPORT_DATA = "demo" if config["download"].get("generate_demo") else "real"
REPORT_CONFIG = (
    ",".join(os.path.relpath(f) for f in workflow.configfiles) or "config/config.yaml"
)
REPLICATE_NAMES = [f"member{m}" for m in REPLICATES]
ENSEMBLE_NAMES = [f"ensemble{n}" for n in ENSEMBLE_SIZES if n > 1]
EVAL = f"{RESULTS}/eval/{{kind}}/{{name}}/summary.json"
# The evaluated models by name; a baseline option without names marks its row "not run".
REPORT_MODELS = (
    f"--replicates {' '.join(REPLICATE_NAMES)} "
    f"--borzoi {' '.join(b for b in BASELINES if b.startswith('borzoi'))} "
    f"--flashzoi {' '.join(b for b in BASELINES if b.startswith('flashzoi'))} "
    f"--released {' '.join(RELEASED)}"
)


# Per table and figure: its input files (callables, as the Snakefile uses them), the options of
# `flashrna report <name>`, its outputs (the first is the one the report shows), its category.
REPORT_INPUTS = {
    "table1": lambda: expand(EVAL, kind="tracks", name=TRACK_MODELS),
    "table2": lambda: expand(
        EVAL, kind="eqtl", name=[*REPLICATE_NAMES, *BASELINES, *RELEASED]
    ),
    "table3": lambda: expand(EVAL, kind="chip", name=CHIP_MODES),
    "table4": lambda: [
        f"{RESULTS}/finetune/halflife/summary.json",
        f"{RESULTS}/finetune/te/summary.json",
    ],
    "figure1": lambda: [f"{RESULTS}/bench/compare.json"],
    "figure2": lambda: expand(
        EVAL,
        kind="eqtl",
        name=[
            *REPLICATE_NAMES,
            *ENSEMBLE_NAMES,
            "distilled",
            *BASELINES,
            *RELEASED,
            *RELEASED_ENSEMBLE,
            *RELEASED_DISTILLED,
        ],
    ),
}
REPORT_OPTIONS = {
    "table1": REPORT_MODELS,
    "table2": REPORT_MODELS,
    "table3": f"--modes {' '.join(CHIP_MODES)} --borzoi",
    "table4": "",
    "figure1": "",  # reads RESULTS/bench/compare.json
    "figure2": f"{REPORT_MODELS} --ensembles {' '.join(ENSEMBLE_NAMES)} "
    f"--distilled distilled --released-ensembles {' '.join(RELEASED_ENSEMBLE)} "
    f"--released-distilled {' '.join(RELEASED_DISTILLED)}",
}
REPORT_FILES = {
    **{
        f"table{k}": [
            f"{RESULTS}/tables/table{k}.{ext}" for ext in ("html", "md", "csv", "tex")
        ]
        for k in range(1, 5)
    },
    "figure1": [f"{RESULTS}/figures/figure1.{ext}" for ext in ("png", "pdf")],
    "figure2": [f"{RESULTS}/figures/figure2.{ext}" for ext in ("png", "pdf", "csv")],
}
REPORT_CATEGORIES = {
    "table1": "Table 1: track Pearson",
    "table2": "Table 2: eQTL Spearman",
    "table3": "Table 3: ChIP-seq fine-tuning",
    "table4": "Table 4: half-life and TE",
    "figure1": "Figure 1: speed and memory vs Borzoi",
    "figure2": "Figure 2: eQTL vs ensemble size",
}


rule bench_compare:
    output:
        f"{RESULTS}/bench/compare.json",
    log:
        f"{LOGS}/bench/compare.log",
    benchmark:
        f"{BENCH}/bench/compare.tsv"
    conda:
        "../envs/flashrna.yaml"
    threads: threads("evaluate")
    resources:
        **resources("evaluate"),
    params:
        # --size auto: the paper's size on a GPU, reduced on a CPU (flashrna.figure1)
        extra=step_options("report.compare", "bench compare"),
    shell:
        "flashrna bench compare --output {output:q} {params.extra} >> {log:q} 2>&1"


# One rule per table and figure: each has its own caption file.
for _name, _files in REPORT_FILES.items():

    rule:
        name:
            f"report_{_name}"
        input:
            REPORT_INPUTS[_name](),
        output:
            report(
                _files[0],
                caption=f"../report/{_name}.rst",
                category=REPORT_CATEGORIES[_name],
            ),
            _files[1:],
        log:
            f"{LOGS}/report/{_name}.log",
        conda:
            "../envs/plot.yaml"
        resources:
            **resources("report"),
        params:
            what=_name,
            results=lambda wc, output: str(Path(output[0]).parents[1]),
            out=lambda wc, output: str(Path(output[0]).parent),
            options=REPORT_OPTIONS[_name],
            footer=" ".join(
                (
                    option("--run-name", config["run"]),
                    option("--config", REPORT_CONFIG),
                    option("--data", REPORT_DATA),
                )
            ),
        shell:
            "flashrna report {params.what} --results {params.results:q} --out {params.out:q} "
            "{params.options} {params.footer} >> {log:q} 2>&1"
