"""Fine-tuning the pretrained replicate 0 (`flashrna finetune`): ChIP-seq (head only, full),
RNA half-life (Saluki data) and translation efficiency (RiboNN data)."""


rule finetune_chip:
    input:
        chip_shards,
        model=f"{PRETRAINED}/model.safetensors",
    output:
        f"{RESULTS}/finetune/chip-{{mode}}/model/model.safetensors",
    log:
        f"{LOGS}/finetune/chip-{{mode}}.log",
    benchmark:
        f"{BENCH}/finetune/chip-{{mode}}.tsv"
    wildcard_constraints:
        mode="head|full",
    conda:
        "../../envs/flashrna.yaml"
    threads: threads("finetune")
    resources:
        **resources("finetune"),
    params:
        pretrained=lambda wc, input: str(Path(input.model).parent),
        run=lambda wc, output: str(Path(output[0]).parents[1]),
        shards=f"{RESULTS}/chip_shards/{HUMAN}",
        extra=options(config["finetune"]["chip"]),
    shell:
        "flashrna finetune chip --model {params.pretrained} --shards {params.shards} "
        "--mode {wildcards.mode} --out {params.run} {params.extra} >> {log} 2>&1"


rule finetune_halflife:
    input:
        data=f"{DATA}/saluki/record.tsv",
        model=f"{PRETRAINED}/model.safetensors",
    output:
        f"{RESULTS}/finetune/halflife/summary.json",
    log:
        f"{LOGS}/finetune/halflife.log",
    benchmark:
        f"{BENCH}/finetune/halflife.tsv"
    conda:
        "../../envs/flashrna.yaml"
    threads: threads("finetune")
    resources:
        **resources("finetune"),
    params:
        pretrained=lambda wc, input: str(Path(input.model).parent),
        data=f"{DATA}/saluki/datasets/deeplearning/train_gru",
        run=lambda wc, output: str(Path(output[0]).parent),
        folds=" ".join(map(str, HALFLIFE_FOLDS)),
        extra=options(config["finetune"]["halflife"]),
    shell:
        "flashrna finetune halflife --model {params.pretrained} --data {params.data} "
        "--folds {params.folds} --out {params.run} {params.extra} >> {log} 2>&1"


rule finetune_te:
    input:
        data=f"{DATA}/ribonn/te_human.tsv",
        model=f"{PRETRAINED}/model.safetensors",
    output:
        f"{RESULTS}/finetune/te/summary.json",
    log:
        f"{LOGS}/finetune/te.log",
    benchmark:
        f"{BENCH}/finetune/te.tsv"
    conda:
        "../../envs/flashrna.yaml"
    threads: threads("finetune")
    resources:
        **resources("finetune"),
    params:
        pretrained=lambda wc, input: str(Path(input.model).parent),
        run=lambda wc, output: str(Path(output[0]).parent),
        extra=options(config["finetune"]["te"]),
    shell:
        "flashrna finetune te --model {params.pretrained} --data {input.data} "
        "--out {params.run} {params.extra} >> {log} 2>&1"
