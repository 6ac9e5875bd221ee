"""RSMEB on GeoScenes: the 21 tasks of eval/rsmeb.py, in its six groups, on the synthetic world's test split.

The same harness as eval/rsmeb.py (same suite format, task kinds, candidate policies, templates, P@1, crop
baseline for the region tasks), but every task reads GeoScenes, so it runs anywhere with no download: it is
what ``vlm2geovec demo`` evaluates. Where RSMEB has several datasets for one task (AID, PatternNet, ...),
this suite has the same task on a different part of the test split, chosen by the tile's dominant land
cover (``land_cover``): each row below names the RSMEB task it stands in for. Figures are on a synthetic
world and say nothing about real imagery; they show that training works and what each task needs.

Test tiles come from 15-degree cells of the planet that no training tile comes from (see
vlm2geovec_jax/geoscenes/__init__.py), so the suite is zero-shot in place, as RSMEB is.

    vlm2geovec eval --ckpt CKPT --suite eval/geoscenes.py --data_dir DATA --out OUT

Arguments after ``:`` (comma-separated): a builder config to read (``tiny``, ``small`` (default), ``base``,
or any config name built into DATA), ``validation`` to read the validation split instead of the test split
(where every choice of steps, mixture or temperature is made; the test split only reports), and ``quick``
to cap every task at 16 queries (a smoke run), e.g. ``eval/geoscenes.py:tiny,validation,quick``.
"""
import ml_collections

SEED = 0
DEFAULT_CONFIG = "small"
NUM_QUERIES = 200  # per task, drawn with the seed (MMEB caps at 1000; a CPU demo at far fewer)
NUM_CANDIDATES = 100  # "sampled" tasks: the gold and 99 others (the test split has a few hundred tiles)
QUICK_QUERIES = 16

WATER = ("water",)
LAND = ("desert", "forest", "farmland", "grassland", "urban", "ice")
URBAN = ("urban",)
VEGETATED = ("forest", "farmland", "grassland")
BARE = ("desert", "ice")
NOT_URBAN = ("water", "ice", "desert", "forest", "farmland", "grassland")


def _task(group, kind, policy, description, *, land_cover=None, **extra):
    cfg = dict(group=group, dataset="", split="test", kind=kind, candidate_policy=policy,
               num_candidates=NUM_CANDIDATES, hard_negatives=False, num_queries=NUM_QUERIES,
               metrics=("p@1", "recall@5", "mrr"), seed=SEED, description=description)
    if land_cover is not None:
        cfg["filters"] = {"land_cover": tuple(land_cover)}
    cfg.update(extra)
    return cfg


def _tasks():
    cls, search, comp, vqa, region, geo = ("scene_classification", "cross_modal_search", "compositional_retrieval",
                                           "vqa", "grounding_region", "semantic_geospatial")
    sc, t2i, i2t, rc, ref = "scene_classification", "text_to_image", "image_to_text", "region_caption", \
        "referring_expression"
    sgl, gir = "semantic_geo_localization", "geo_image_retrieval"
    return {
        # scene classification: image -> every one of the 10 scene names (AID, PatternNet, WHU-RS19, ...)
        "scene_classification": _task(cls, sc, "all_classes", "all tiles (for AID)"),
        "scene_classification_water": _task(cls, sc, "all_classes", "water tiles: sea vs harbor (for PatternNet)",
                                            land_cover=WATER),
        "scene_classification_urban": _task(cls, sc, "all_classes", "urban tiles: city, industrial, airport "
                                            "(for WHU-RS19)", land_cover=URBAN),
        "scene_classification_vegetated": _task(cls, sc, "all_classes", "forest, farmland, grassland tiles "
                                                "(for NWPU-RESISC45)", land_cover=VEGETATED),
        "scene_classification_bare": _task(cls, sc, "all_classes", "desert and ice tiles (for EuroSAT)",
                                           land_cover=BARE),
        # cross-modal search: caption <-> image over the whole gallery (RSICD, RSITMD)
        "text_to_image": _task(search, t2i, "gallery", "caption -> image, all tiles (for RSICD)"),
        "image_to_text": _task(search, i2t, "gallery", "image -> any of its captions, all tiles (for RSICD)"),
        "text_to_image_land": _task(search, t2i, "gallery", "caption -> image, land tiles (for RSITMD)",
                                    land_cover=LAND),
        "image_to_text_land": _task(search, i2t, "gallery", "image -> any of its captions, land tiles (for RSITMD)",
                                    land_cover=LAND),
        # compositional retrieval: image + change -> edited image, the unchanged image among the candidates
        "composed_object_edits": _task(comp, "composed_retrieval", "sampled", "add / remove objects",
                                       hard_negatives=True, filters={"composed/change_type": ("add", "remove")}),
        "composed_attribute_edits": _task(comp, "composed_retrieval", "sampled",
                                          "recolor / remove a referred object", hard_negatives=True,
                                          filters={"composed/change_type": ("recolor", "remove_one")}),
        # VQA: image + question -> answer, against the answer vocabulary of the task's tiles
        "vqa": _task(vqa, "vqa", "all_classes", "all tiles (for RSVQA-LR)"),
        "vqa_urban": _task(vqa, "vqa", "all_classes", "urban tiles: many objects (for RSVQA-HR)", land_cover=URBAN),
        "vqa_non_urban": _task(vqa, "vqa", "all_classes", "other tiles (for VRSBench VQA)", land_cover=NOT_URBAN),
        # visual grounding and region-level reasoning: the other objects of the same tile come first
        "region_caption_retrieval": _task(region, rc, "sampled", "image + box -> region caption (for "
                                          "GeoChat-Bench)", hard_negatives=True),
        "referring_expression_retrieval": _task(region, ref, "sampled", "image + expression -> the referred box "
                                                "(for DIOR-RSVG)", hard_negatives=True),
        "region_caption_urban": _task(region, rc, "sampled", "image + box -> region caption, urban tiles "
                                      "(for VRSBench)", hard_negatives=True, land_cover=URBAN),
        "referring_expression_urban": _task(region, ref, "sampled", "image + expression -> box, urban tiles "
                                            "(for VRSBench)", hard_negatives=True, land_cover=URBAN),
        # semantic geospatial retrieval
        "geo_localization": _task(geo, sgl, "sampled", "image -> its coordinates + place description, "
                                  "all tiles (for fMoW)"),
        "geo_localization_land": _task(geo, sgl, "sampled", "image -> its coordinates + place "
                                       "description, land tiles (for SkyScript)",
                                       land_cover=LAND),
        "geo_image_retrieval": _task(geo, gir, "sampled", "place description + coordinates -> image "
                                     "(for SkyScript)"),
    }


def _options(arg):
    config, quick, split = DEFAULT_CONFIG, False, "test"
    for part in (p.strip() for p in (arg or "").split(",") if p.strip()):
        if part == "quick":
            quick = True
        elif part == "validation":
            split = "validation"
        elif part.replace("_", "").isalnum():
            config = part
        else:
            raise ValueError(f"eval/geoscenes.py: argument {part!r}: expected a builder config name, 'validation' "
                             "or 'quick'")
    return config, quick, split


def get_config(arg=None):
    """The suite over ``geoscenes/<config>`` (default small), its test split or ``validation``; ``quick`` caps
    every task at 16 queries."""
    builder_config, quick, split = _options(arg)
    config = ml_collections.ConfigDict()
    config.name = "geoscenes"
    config.templates_version = "v1"
    config.seed = SEED
    config.paper = {}  # a synthetic world: the paper's figures do not apply
    config.crop_baseline = True
    tasks = _tasks()
    for task in tasks.values():
        task["dataset"] = f"geoscenes/{builder_config}"
        task["split"] = split
        if quick:
            task["num_queries"] = QUICK_QUERIES
    config.tasks = ml_collections.ConfigDict(tasks)
    return config
