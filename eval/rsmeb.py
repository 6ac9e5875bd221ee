"""RSMEB, the Remote Sensing Multimodal Embedding Benchmark: 21 ranking tasks in six groups, scored by P@1.

THIS IS A RECONSTRUCTION. The VLM2GeoVec paper (arXiv 2512.11490) introduces RSMEB, but its task files,
candidate lists and per-task tables are unpublished; only the six groups, the count of 21 tasks, the P@1
metric, the MMEB-style ranking protocol and three headline figures are public. The tasks below are our
best reading of that description, built from public datasets through the builders in data/ (and TFDS's
resisc45 and eurosat). Our numbers are therefore NOT comparable with the paper's, except as a rough
reference for the three named tasks whose headline figures are carried in ``paper`` and beside each task.
When the official files are released, set each task's ``official_file`` (an MMEB-format .jsonl/.parquet,
relative to the data directory) and they are read unchanged instead.

Protocol (MMEB's): one query per row, candidates per row, P@1 = the top-ranked candidate is gold.
- all_classes: every class name of the dataset (scene classification) or every distinct answer of the
  split (VQA: the answer vocabulary);
- sampled: the gold plus 999 others drawn with the task seed (region tasks: the other objects of the same
  image first, since candidates from other images are trivially told apart by the image);
- gallery: the whole test gallery (the usual RS cross-modal retrieval protocol).
Candidate order is shuffled with the seed in every row, so ties cost what chance does (MMEB puts the gold
first and breaks ties by lower index, which would give a collapsed encoder 100%).

Choices where the paper is silent: queries are capped at 1000 per task (MMEB), drawn with the seed; tasks
read evaluation splits only (no RSMEB image is in a training split); compositional retrieval has no public
remote-sensing source with a builder here (PatternCom would be the natural one), so its two tasks use the
synthetic GeoScenes world's composed edits, split into object-count edits and attribute/reference edits.

    vlm2geovec eval --ckpt CKPT --suite eval/rsmeb.py --data_dir DATA --out OUT

``eval/rsmeb.py:quick`` caps every task at 100 queries (a smoke run).
"""
import ml_collections

SEED = 0
PAPER = {  # P@1 (%) of VLM2GeoVec, from the paper's abstract
    "region_caption_retrieval": 26.6,
    "referring_expression_retrieval": 32.5,
    "semantic_geo_localization_retrieval": 17.8,
}


def _task(group, dataset, split, kind, policy, description, **extra):
    cfg = dict(group=group, dataset=dataset, split=split, kind=kind, candidate_policy=policy, num_candidates=1000,
               hard_negatives=False, num_queries=1000, metrics=("p@1", "recall@5", "mrr"), seed=SEED,
               official_file="", description=description)
    cfg.update(extra)
    return ml_collections.ConfigDict(cfg)


def _tasks():
    cls, search, comp, vqa, region, geo = ("scene_classification", "cross_modal_search", "compositional_retrieval",
                                           "vqa", "grounding_region", "semantic_geospatial")
    sc, t2i, i2t = "scene_classification", "text_to_image", "image_to_text"
    return {
        # scene classification: image -> every class name
        "aid_classification": _task(cls, "rs_scenes/aid", "test", sc, "all_classes", "AID, 30 classes"),
        "patternnet_classification": _task(cls, "rs_scenes/patternnet", "test", sc, "all_classes",
                                           "PatternNet, 38 classes"),
        "whu_rs19_classification": _task(cls, "rs_scenes/whu_rs19", "test", sc, "all_classes",
                                         "WHU-RS19, 19 classes"),
        "resisc45_classification": _task(cls, "resisc45", "test", sc, "all_classes",
                                         "NWPU-RESISC45, 45 classes (held-out 20% of TFDS's only split)"),
        "eurosat_classification": _task(cls, "eurosat/rgb", "test", sc, "all_classes",
                                        "EuroSAT RGB, 10 classes (held-out 20% of TFDS's only split)"),
        # cross-modal search: caption <-> image over the whole test gallery
        "rsicd_text_to_image": _task(search, "rs_captions/rsicd", "test", t2i, "gallery", "RSICD caption -> image"),
        "rsicd_image_to_text": _task(search, "rs_captions/rsicd", "test", i2t, "gallery",
                                     "RSICD image -> any of its captions"),
        "rsitmd_text_to_image": _task(search, "rs_captions/rsitmd", "test", t2i, "gallery",
                                      "RSITMD caption -> image"),
        "rsitmd_image_to_text": _task(search, "rs_captions/rsitmd", "test", i2t, "gallery",
                                      "RSITMD image -> any of its captions"),
        # compositional retrieval: image + change -> edited image (synthetic world, see module docstring)
        "composed_object_edits": _task(comp, "geoscenes/small", "test", "composed_retrieval", "sampled",
                                       "GeoScenes: add / remove objects",
                                       filters={"composed/change_type": ("add", "remove")}),
        "composed_attribute_edits": _task(comp, "geoscenes/small", "test", "composed_retrieval", "sampled",
                                          "GeoScenes: recolor / remove a referred object",
                                          filters={"composed/change_type": ("recolor", "remove_one")}),
        # VQA: image + question -> answer, against the split's answer vocabulary
        "rsvqa_lr": _task(vqa, "rsvqa/lr", "test", "vqa", "all_classes", "RSVQA-LR (Sentinel-2)"),
        "rsvqa_hr": _task(vqa, "rsvqa/hr", "test", "vqa", "all_classes", "RSVQA-HR (USGS aerial)"),
        "vrsbench_vqa": _task(vqa, "vrsbench", "validation", "vqa", "all_classes",
                              "VRSBench VQA (its evaluation split is validation)"),
        # visual grounding and region-level reasoning
        "region_caption_retrieval": _task(region, "geochat_bench/region_captioning", "test", "region_caption",
                                          "sampled", "GeoChat-Bench: image + box -> region caption",
                                          hard_negatives=True, paper_p1=PAPER["region_caption_retrieval"]),
        "referring_expression_retrieval": _task(region, "dior_rsvg", "test", "referring_expression", "sampled",
                                                "DIOR-RSVG: image + expression -> the referred box",
                                                hard_negatives=True, paper_p1=PAPER["referring_expression_retrieval"]),
        "vrsbench_region_caption": _task(region, "vrsbench", "validation", "region_caption", "sampled",
                                         "VRSBench: image + box -> object caption, other objects first",
                                         hard_negatives=True),
        "vrsbench_referring": _task(region, "vrsbench", "validation", "referring_expression", "sampled",
                                    "VRSBench: image + expression -> box, other boxes of the image first",
                                    hard_negatives=True),
        # semantic geospatial retrieval
        "semantic_geo_localization_retrieval": _task(geo, "fmow", "validation", "semantic_geo_localization",
                                                     "sampled", "fMoW: image -> its coordinates",
                                                     paper_p1=PAPER["semantic_geo_localization_retrieval"]),
        "skyscript_geo_localization": _task(geo, "skyscript/top30pct", "test", "semantic_geo_localization",
                                            "sampled", "SkyScript: image -> its coordinates"),
        "skyscript_geo_image_retrieval": _task(geo, "skyscript/top30pct", "test", "geo_image_retrieval",
                                               "sampled", "SkyScript: caption + coordinates -> image"),
    }


def get_config(arg=None):
    """The RSMEB suite; ``arg="quick"`` caps every task at 100 queries."""
    config = ml_collections.ConfigDict()
    config.name = "rsmeb"
    config.templates_version = "v1"
    config.seed = SEED
    config.paper = dict(PAPER)
    config.crop_baseline = True  # also run region tasks with crops instead of box tokens
    config.tasks = ml_collections.ConfigDict(_tasks())
    if arg == "quick":
        for name in config.tasks:
            config.tasks[name].num_queries = 100
    elif arg is not None:
        raise ValueError(f"eval/rsmeb.py: unknown argument {arg!r}; expected nothing or 'quick'")
    return config
