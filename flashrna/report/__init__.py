"""``flashrna report <what>``: the paper's tables and figures from one run's result files.

Every table is written as ``<out>/tableK.{md,csv,tex,html}`` (the HTML is what ``snakemake
--report`` shows); every figure as ``<out>/figureK.{png,pdf}``, Figure 2 with the plotted points
in ``figure2.csv``. This run's values stand beside the paper's (the FlashRNA paper's Tables 1-4
and Figures 1-2, which also give the Borzoi and Flashzoi rows); a value is the mean ± SD (ddof 1)
over replicates (Tables 1-3, Figure 2) or folds (Table 4) where there are several,
and a footer names the run, its config, the value space and the data (demo or real).

Inputs, relative to the run's results directory (``--results``; the workflow's layout). A model
name is a directory under ``eval/tracks`` (Table 1), ``eval/eqtl`` (Table 2, Figure 2) or
``eval/chip`` (Table 3): ``member<k>`` for FlashRNA replicates, ``ensemble<n>``, ``distilled``,
``borzoi<k>``, ``flashzoi<k>``, and for the released FlashRNA weights (config ``published``)
``released<k>``, ``released-ensemble<n>``, ``released-distilled``. Names given on the command line
are required; without them the ones present are used, and a baseline with none present is shown
as "not run" (the released rows only appear when present).

========  ====================================================================================
table1    ``eval/tracks/<model>/summary.json`` (evaluate-tracks): ``assays.<assay>.counts
          .values`` (``--space``), one value per model the summary holds; rows FlashRNA
          (``--replicates``), Borzoi, Flashzoi
table2    ``eval/eqtl/<model>/summary.json`` (eqtl-benchmark): ``spearman_mean``; same rows
table3    ``eval/chip/<mode>/summary.json`` (evaluate-tracks of a ChIP fine-tuned model):
          assay ``CHIP``; rows Borzoi (``eval/chip/borzoi<k>``), FlashRNA head-only, full
table4    ``finetune/halflife/summary.json``, ``finetune/te/summary.json`` (finetune
          halflife/te): ``pearson_per_fold`` (each fold's mean over targets), mean ± SD
figure1   ``bench/compare.json`` (``flashrna bench compare``), drawn by
          :func:`flashrna.report.figures.plot_figure1`
figure2   ``eval/eqtl/<model>/summary.json`` of replicates (size 1), ``ensemble<n>``,
          ``distilled`` and the baselines
========  ====================================================================================

Modules: :mod:`~flashrna.report.tables` (Tables 1-4 and their renderings),
:mod:`~flashrna.report.figures` (Figures 1 and 2), :mod:`~flashrna.report.cli` (the
``flashrna report`` adapter). Nothing here imports PyTorch, so the report steps run in a small
environment.
"""
