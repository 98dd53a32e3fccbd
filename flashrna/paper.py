"""The numbers the reports put beside ours: the FlashRNA paper's Tables 1-4 and Figures 1-2 (which
also give the Borzoi and Flashzoi rows). Values are (mean, SD), SD None where the paper gives none.
"""

PAPER_TABLE1 = {
    "Borzoi": {"RNA": (0.654, 0.003), "DNASE": (0.820, 0.003), "ATAC": (0.643, 0.015)},
    "Flashzoi": {"RNA": (0.658, 0.003), "DNASE": (0.833, 0.001), "ATAC": (0.630, 0.021)},
    "FlashRNA": {"RNA": (0.647, 0.002), "DNASE": (0.845, 0.001), "ATAC": (0.711, 0.001)},
}
PAPER_TABLE2 = {"Borzoi": (0.399, 0.003), "Flashzoi": (0.398, 0.012), "FlashRNA": (0.406, 0.005)}
PAPER_TABLE3 = {
    "Borzoi": (0.595, 0.001),
    "FlashRNA head-only": (0.574, 0.001),
    "FlashRNA full": (0.593, 0.001),
}
PAPER_TABLE4 = {
    ("Half-life", "Saluki"): (0.62, None),
    ("Half-life", "Saluki + annotations"): (0.77, None),
    ("Half-life", "FlashRNA"): (0.81, None),
    ("TE", "RiboNN"): (0.66, None),
    ("TE", "RiboNN + annotations"): (0.71, None),
    ("TE", "FlashRNA"): (0.73, None),
}
PAPER_FIGURE2 = {1: 0.406, 4: 0.440, 16: 0.454}
PAPER_DISTILLED = 0.452  # 16 members distilled into one model

# Figure 1: FlashRNA / Borzoi on one H100 in bf16.
PAPER_RATIOS = {
    "forward_examples_per_s": 6.1,
    "train_examples_per_s": 2.4,
    "max_train_batch": 4.0,
    "max_inference_length": 3.5,
}
PAPER_NOTE = "one H100, bf16; FlashRNA's longest input 3.6 Mbp"
