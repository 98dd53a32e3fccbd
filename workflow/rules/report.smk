"""The paper's tables and figures (`flashrna report`) from this run's results."""

REPORT_INPUTS = {
    "table1": lambda: expand(
        f"{RESULTS}/eval/tracks/{{model}}/summary.json", model=TRACK_MODELS
    ),
    "table2": lambda: expand(
        f"{RESULTS}/eval/eqtl/{{model}}/summary.json", model=EQTL_MODELS
    ),
    "table3": lambda: expand(
        f"{RESULTS}/eval/chip/{{mode}}/summary.json", mode=CHIP_MODES
    ),
    "table4": lambda: [
        f"{RESULTS}/finetune/halflife/summary.json",
        f"{RESULTS}/finetune/te/summary.json",
    ],
    "figure1": lambda: [f"{RESULTS}/bench/compare.json"],
    "figure2": lambda: expand(
        f"{RESULTS}/eval/eqtl/{{model}}/summary.json", model=EQTL_MODELS
    ),
}
REPORT_FILES = {
    **{f"table{k}": f"{RESULTS}/tables/table{k}.tsv" for k in range(1, 5)},
    **{f"figure{k}": f"{RESULTS}/figures/figure{k}.png" for k in (1, 2)},
}


rule bench_compare:
    output:
        f"{RESULTS}/bench/compare.json",
    log:
        f"{LOGS}/bench/compare.log",
    benchmark:
        f"{BENCH}/bench/compare.tsv"
    conda:
        "../../envs/flashrna.yaml"
    threads: threads("evaluate")
    resources:
        **resources("evaluate"),
    params:
        preset=config["model"]["preset"],
    shell:
        "flashrna bench compare --preset {params.preset} --output {output} > {log} 2>&1"


rule report:
    input:
        lambda wc: REPORT_INPUTS[wc.name](),
    output:
        f"{RESULTS}/{{kind}}/{{name}}.{{ext}}",
    log:
        f"{LOGS}/report/{{kind}}-{{name}}.{{ext}}.log",
    wildcard_constraints:
        kind="tables|figures",
        name="table[1-4]|figure[12]",
        ext="tsv|png",
    conda:
        "../../envs/plot.yaml"
    resources:
        **resources("report"),
    params:
        results=lambda wc, output: str(Path(output[0]).parents[1]),
        run=config["run"],
    shell:
        "flashrna report {wildcards.name} --results {params.results} --run {params.run} "
        "--out {output} > {log} 2>&1"
