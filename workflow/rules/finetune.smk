"""Fine-tuning replicate 0 (`flashrna finetune`): a ChIP-seq head (head only, and full; Table 3),
RNA half-life (Saluki data) and translation efficiency (RiboNN data; Table 4).

ChIP runs are `flashrna train` runs (model/ marks them finished; checkpoints make them
resumable, as in train.smk). Half-life and TE run their folds in one job each (in head mode the
trunk's embeddings are computed once and cached for every fold); folds already done are skipped
when a job is retried, and the job ends by gathering the folds into pearson.csv and summary.json
(as `flashrna finetune aggregate` does). pearson.csv, not an output, marks a finished run: a
rerun snakemake asks for (summary.json removed) starts afresh, as training runs do.
"""


rule finetune_chip:
    input:
        chip_shards,
        genome=f"{DATA}/genome/{HUMAN}.ml.fa",
        model=f"{PRETRAINED}/model.safetensors",
        config=CHIP_CONFIG,
    output:
        model=f"{RESULTS}/finetune/chip-{{mode}}/model/model.safetensors",
        tracks=f"{RESULTS}/finetune/chip-{{mode}}/model/targets-chip.txt",
    log:
        f"{LOGS}/finetune/chip-{{mode}}.log",
    benchmark:
        f"{BENCH}/finetune/chip-{{mode}}.tsv"
    wildcard_constraints:
        mode="head|full",
    conda:
        "../envs/flashrna.yaml"
    threads: threads("finetune")
    resources:
        **resources("finetune"),
    params:
        pretrained=lambda wc, input: str(Path(input.model).parent),
        run=lambda wc, output: str(Path(output.model).parents[1]),
        shards=f"{RESULTS}/chip_shards/{HUMAN}",
        options=step_options("finetune.chip", "finetune chip"),
    shell:
        "flashrna finetune chip --restart-finished --model {params.pretrained:q} --shards {params.shards:q} "
        "--mode {wildcards.mode} --head chip --genome {input.genome:q} "
        "--config {input.config:q} {params.options} --out {params.run:q} >> {log:q} 2>&1"


rule finetune_halflife:
    input:
        data=f"{DATA}/saluki/record.tsv",
        model=f"{PRETRAINED}/model.safetensors",
    output:
        summary=f"{RESULTS}/finetune/halflife/summary.json",
    log:
        f"{LOGS}/finetune/halflife.log",
    benchmark:
        f"{BENCH}/finetune/halflife.tsv"
    conda:
        "../envs/flashrna.yaml"
    threads: threads("finetune")
    resources:
        **resources("finetune"),
    params:
        pretrained=lambda wc, input: str(Path(input.model).parent),
        data=lambda wc, input: f"{Path(input.data).parent}/datasets/deeplearning/train_gru",
        out=lambda wc, output: str(Path(output.summary).parent),
        options=step_options("finetune.halflife", "finetune halflife"),
    shell:
        "flashrna finetune halflife --restart-finished --model {params.pretrained:q} --data {params.data:q} "
        "--species human {params.options} --out {params.out:q} >> {log:q} 2>&1"


rule finetune_te:
    input:
        data=f"{DATA}/ribonn/te_human.tsv",
        model=f"{PRETRAINED}/model.safetensors",
    output:
        summary=f"{RESULTS}/finetune/te/summary.json",
    log:
        f"{LOGS}/finetune/te.log",
    benchmark:
        f"{BENCH}/finetune/te.tsv"
    conda:
        "../envs/flashrna.yaml"
    threads: threads("finetune")
    resources:
        **resources("finetune"),
    params:
        pretrained=lambda wc, input: str(Path(input.model).parent),
        out=lambda wc, output: str(Path(output.summary).parent),
        options=step_options("finetune.te", "finetune te"),
    shell:
        "flashrna finetune te --restart-finished --model {params.pretrained:q} --data {input.data:q} "
        "{params.options} --out {params.out:q} >> {log:q} 2>&1"
