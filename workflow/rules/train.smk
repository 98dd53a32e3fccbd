"""Training: the ensemble members (seeds 0..members-1; members 0..replicates-1 are the Table 1-3
replicates, so no model is trained twice), the ensemble's predictions over the training windows,
and the distilled student.

Priority: these jobs are the critical path of the DAG (every table waits for the distilled
model or the members), so they run first and evaluations fill the free cores.

Resume: a training job's outputs are only the finished model (model/model.safetensors and its
track tables); its run directory, with the checkpoints, is not an output, so snakemake leaves it
in place when a job fails, is preempted (SIGTERM: the trainer writes a checkpoint first) or runs
out of time, and the retried or requeued job continues from the newest checkpoint exactly.
"""


rule run_config:
    output:
        f"{RESULTS}/configs/{{name}}.yaml",
    log:
        f"{LOGS}/run_config/{{name}}.log",
    wildcard_constraints:
        name="|".join(RUN_CONFIGS),
    localrule: True
    conda:
        # printf and mv only: the smallest env
        "../envs/plot.yaml"
    params:
        # A changed config changes this parameter, which reruns the rule and what reads it.
        text=lambda wc: yaml.safe_dump(RUN_CONFIGS[wc.name], sort_keys=False),
    shell:
        "(printf '%s' {params.text:q} > {output:q}.tmp && mv {output:q}.tmp {output:q} && "
        "echo wrote {output:q}) >> {log:q} 2>&1"


rule train:
    input:
        all_shards,
        genome_inputs,
        config=TRAIN_CONFIG,
    output:
        model=f"{RESULTS}/models/member{{member}}/model/model.safetensors",
        tracks=heads_of(f"{RESULTS}/models/member{{member}}"),
    log:
        f"{LOGS}/train/member{{member}}.log",
    benchmark:
        f"{BENCH}/train/member{{member}}.tsv"
    wildcard_constraints:
        member=r"\d+",
    priority: 10
    conda:
        "../envs/flashrna.yaml"
    threads: threads("train")
    resources:
        **resources("train"),
    params:
        run=lambda wc, output: str(Path(output.model).parents[1]),
    shell:
        "flashrna train --restart-finished --config {input.config:q} --seed {wildcards.member} "
        "--out {params.run:q} >> {log:q} 2>&1"


rule ensemble_predict:
    input:
        teacher_inputs,
        models=[
            f"{RESULTS}/models/member{m}/model/model.safetensors"
            for m in range(TEACHER)
        ],
    output:
        directory(expand(f"{RESULTS}/teacher/{{genome}}", genome=GENOMES)),
    log:
        f"{LOGS}/ensemble_predict/ensemble{TEACHER}.log",
    benchmark:
        f"{BENCH}/ensemble_predict/ensemble{TEACHER}.tsv"
    priority: 10
    conda:
        "../envs/flashrna.yaml"
    threads: threads("predict")
    resources:
        **resources("predict"),
    params:
        models=lambda wc, input: " ".join(
            f"--model {Path(m).parent}" for m in input.models
        ),
        shards=lambda wc, input: str(Path(input[0]).parents[1]),
        options=step_options("ensemble", "ensemble-predict"),
    shell:
        "(for out in {output:q}; do "
        "flashrna ensemble-predict {params.models} "
        '--shards {params.shards:q}/"$(basename "$out")" --splits train valid --out "$out" '
        "{params.options}; "
        "done) >> {log:q} 2>&1"


rule distill:
    input:
        teacher_inputs,
        genome_inputs,
        teachers=expand(f"{RESULTS}/teacher/{{genome}}", genome=GENOMES),
        config=DISTILL_CONFIG,
    output:
        model=f"{RESULTS}/models/distilled/model/model.safetensors",
        tracks=heads_of(f"{RESULTS}/models/distilled"),
    log:
        f"{LOGS}/distill/distilled.log",
    benchmark:
        f"{BENCH}/distill/distilled.tsv"
    priority: 10
    conda:
        "../envs/flashrna.yaml"
    threads: threads("train")
    resources:
        **resources("train"),
    params:
        run=lambda wc, output: str(Path(output.model).parents[1]),
        teachers=" ".join(
            option("--teacher", f"{name}={RESULTS}/teacher/{spec['genome']}")
            for name, spec in SPECIES.items()
        ),
        weight=config["distill"].get("target_weight", 0.0),
    shell:
        "flashrna distill --restart-finished --config {input.config:q} {params.teachers} "
        "--target-weight {params.weight} --out {params.run:q} >> {log:q} 2>&1"
