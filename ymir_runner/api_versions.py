"""The core version each name of the plugin API was added in: what a plugin's ``ymir-runner>=X`` pin must cover.

A plugin needs the first core version that has every name it uses, and nothing older: the detection plugin once
pinned ``>=0.1`` while importing ``best_stage_name`` (new after 0.2.0), so with core 0.2.0 its first mining task
failed. ``tests/test_plugin_pins.py`` parses each first-party plugin and the ``new-plugin`` scaffold
(``from ymir_runner import X``, ``from ymir_runner.mining import Y``, ``mining.Z``, ``context.model_file``) and
fails on a name newer than the pin or outside this record; it also checks that this record lists exactly the
public modules' ``__all__``, so a name added to the API without a version here fails too.

Recovered from the repository's history (``git show REV:ymir_runner/__init__.py``): 0.1 is the first commit's
face (0974338), 0.2 the ``__all__`` lists of the 0.2.0 release commit (9c25148), 0.3 what the 0.3.0
release added (issues 25 and 26), 0.4 everything added since. Versions are ``MAJOR.MINOR``: a pin names a minor release.
"""

from __future__ import annotations

#: The public modules a plugin may import, and the version each appeared in.
MODULES: dict[str, str] = {
    "ymir_runner": "0.1",
    "ymir_runner.testing": "0.1",
    "ymir_runner.mining": "0.2",
    "ymir_runner.evaluation": "0.2",
    "ymir_runner.cpus": "0.3",
    "ymir_runner.stages": "0.3",
    "ymir_runner.inference": "0.3",
    "ymir_runner.pictures": "0.3",
}


def _listed(version: str, names: str) -> dict[str, str]:
    return {name: version for name in names.split()}


#: Per public module: each name of its ``__all__`` and the version it was added in.
NAMES: dict[str, dict[str, str]] = {
    "ymir_runner": {
        **_listed("0.1", "__version__ hookimpl ExecutorSpec Param TaskKind ReturnCode YmirError ConfigError "
                         "DatasetError ImageFormatError ModelError NonFiniteError"),
        **_listed("0.2", "TaskContext Item Box Progress Detection Stage atomic_path decode_image DecodedImage "
                         "probe_image ImageInfo ImageProblem ObjectTypeError GpuMismatchError NoGpuError "
                         "OutOfMemoryError NetworkError OutputError TaskTerminated evaluation mining launch RankError "
                         "run"),
        **_listed("0.3", "best_stage_name MODEL_INFO_FILE OptionalOutputs excerpt read_yaml parse_yaml cpus "
                         "Prediction stages inference pictures annotation_text annotation_suffix InstanceMask "
                         "EncodedMask Segment"),
        **_listed("0.4", "classify_text write_sdk_env SegCocoImage seg_object write_seg_coco IGNORE_LABEL"),
    },
    "ymir_runner.testing": {
        **_listed("0.2", "png_bytes write_png RunOutcome TaskTree write_task_files install_models make_read_only "
                         "cannot_run_as torn_protocol_files temp_files make_fake_distribution"),
        **_listed("0.3", "ark_text voc_text annotation_text annotation_suffix plugin_registry monitor_writes "
                         "child_pids is_running"),
    },
    "ymir_runner.mining": {
        **_listed("0.2", "MINING_ALGORITHMS Prediction MiningSettings mine_candidates Augmentation horizontal_flip "
                         "cutout rescale CALD_AUGMENTATIONS binary_entropy class_weights random_scores entropy_score "
                         "aldd_score box_iou js_divergence cald_consistency cald_score cald_scores MIN_SCORE"),
        **_listed("0.3", "instance_prediction pixel_entropy semantic_entropy_score semantic_aldd_score "
                         "SEMANTIC_ALGORITHMS"),
    },
    "ymir_runner.evaluation": {
        **_listed("0.2", "EvaluationResult evaluate_detections coco_metrics match_counts box_iou COCO_IOU_THRESHOLDS "
                         "DEFAULT_MAX_DETECTIONS"),
        **_listed("0.3", "match_predictions f1_optimal_threshold DEFAULT_SCORE_THRESHOLD confusion_matrix pr_curves "
                         "PRCurve"),
    },
    "ymir_runner.cpus": _listed(
        "0.3", "CpuLimits CpuShare available_cpus cpu_limits cgroup_cpu_quota configure_openmp openmp_settings "
               "share_cpus CPUS_ENV_VAR THREAD_COUNT_VARIABLES WAIT_POLICY"),
    "ymir_runner.stages": _listed("0.3", "fitness stage_epochs EVAL_COST evaluation_params StageEvaluator "
                                         "seg_ground_truth"),
    "ymir_runner.inference": {**_listed("0.3", "infer_candidates inference_threshold Prediction"),
                              **_listed("0.4", "infer_seg_candidates SegPrediction LabelMap")},
    "ymir_runner.pictures": _listed("0.3", "stage_figures StageFigures pixel_rectangle draw_box class_label PALETTE"),
}

#: Members of the task records a plugin reaches through an object (``context.model_file(...)``), not an import:
#: ``CLASS.member`` -> version. Members that came with their class are not listed: the class's version applies.
MEMBERS: dict[str, str] = {
    **_listed("0.3", "TaskContext.optional_output TaskContext.optional_outputs TaskContext.summary "
                     "TaskContext.decode TaskContext.model_file TaskContext.model_key DecodedImage.pixels "
                     "TaskContext.seg_infer_result Item.segments Item.masks Item.label_map"),
    **_listed("0.4", "ExecutorSpec.reads_own_config ExecutorSpec.named_only"),
}


def added_in(module: str, name: str = "") -> str | None:
    """The version ``module.name`` (or the module itself, for ``name=""``) was added in: ``"0.2"``; None when it is
    not part of the plugin API."""
    if module not in MODULES:
        return None
    if not name:
        return MODULES[module]
    return NAMES[module].get(name)


def version_key(version: str) -> tuple[int, ...]:
    """``"0.3.0"`` -> ``(0, 3)``: the minor release a version or a pin names (raises ValueError on other text)."""
    parts = tuple(int(part) for part in version.split("."))
    return (parts + (0,))[:2]
