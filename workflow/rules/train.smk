"""Training: the ensemble members (seeds 0..members-1; members 0..replicates-1 are the Table 1-3
replicates, so no model is trained twice), the ensemble's predictions over the training windows,
and the distilled student. Training resumes from its own checkpoints when a job is retried or
requeued: the run directory is not an output, only its finished model/ is."""


rule train:
    input:
        all_shards,
        genome_inputs,
        config=TRAIN_CONFIG,
    output:
        f"{RESULTS}/models/member{{member}}/model/model.safetensors",
    log:
        f"{LOGS}/train/member{{member}}.log",
    benchmark:
        f"{BENCH}/train/member{{member}}.tsv"
    wildcard_constraints:
        member=r"\d+",
    conda:
        "../../envs/flashrna.yaml"
    threads: threads("train")
    resources:
        **resources("train"),
    params:
        run=lambda wc, output: str(Path(output[0]).parents[1]),
    shell:
        "flashrna train --config {input.config} --seed {wildcards.member} "
        "--out {params.run} >> {log} 2>&1"


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
    conda:
        "../../envs/flashrna.yaml"
    threads: threads("predict")
    resources:
        **resources("predict"),
    params:
        models=" ".join(f"{RESULTS}/models/member{m}/model" for m in range(TEACHER)),
        shards=f"{RESULTS}/shards",
        extra=options(config["ensemble"]),
    shell:
        "for out in {output}; do "
        "flashrna ensemble-predict --model {params.models} "
        '--shards {params.shards}/"$(basename "$out")" --out "$out" {params.extra}; '
        "done > {log} 2>&1"


rule distill:
    input:
        teachers=expand(f"{RESULTS}/teacher/{{genome}}", genome=GENOMES),
        config=TRAIN_CONFIG,
    output:
        f"{RESULTS}/models/distilled/model/model.safetensors",
    log:
        f"{LOGS}/distill/distilled.log",
    benchmark:
        f"{BENCH}/distill/distilled.tsv"
    conda:
        "../../envs/flashrna.yaml"
    threads: threads("train")
    resources:
        **resources("train"),
    params:
        run=lambda wc, output: str(Path(output[0]).parents[1]),
        teachers=" ".join(
            f"--teacher {name}={RESULTS}/teacher/{spec['genome']}"
            for name, spec in SPECIES.items()
        ),
        weight=config["distill"].get("target_weight", 0.0),
    shell:
        "flashrna distill --config {input.config} {params.teachers} "
        "--target-weight {params.weight} --out {params.run} >> {log} 2>&1"
