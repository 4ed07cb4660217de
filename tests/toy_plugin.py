"""A small but complete plugin used by the core tests: it handles every task kind without torch.

Training "learns" the mean box size per class from the training set and writes it as its model; mining
scores candidates by file size; inference predicts one box per image from the learnt sizes. Behaviour can
be steered through hyper-parameters so tests can make it fail in specific ways.
"""

import json
import os

import ymir_runner
from ymir_runner import ExecutorSpec, Param, TaskKind
from ymir_runner.protocol.results import Detection

NAME = "toy"

TEMPLATES = {
    TaskKind.TRAINING: (
        Param("epochs", 2, "passes over the training set"),
        Param("learning_rate", 0.01, "unused, typed float"),
        Param("use_flip", False, "a boolean the web UI sends as a string"),
        Param("optimizer", "sgd", "a choice", choices=("sgd", "adamw")),
        Param("fail_with", "", "raise this error kind inside the hook (tests)"),
    ),
    TaskKind.MINING: (Param("batch_size_per_gpu", 4, "images per step"),),
    TaskKind.INFER: (Param("conf_threshold", 0.25, "minimum score"),),
}


@ymir_runner.hookimpl
def ymir_runner_register_executors():
    return [ExecutorSpec(name=NAME, tasks={TaskKind.TRAINING, TaskKind.MINING, TaskKind.INFER},
                         templates=TEMPLATES, description="test double")]


def _fail_if_asked(context):
    kind = context.hyper.get("fail_with")
    if kind == "config":
        raise ymir_runner.ConfigError("config key 'fail_with' asked for a config error")
    if kind == "nan":
        raise ymir_runner.NonFiniteError("loss became NaN at step 3")
    if kind == "bug":
        raise KeyError("surprise")
    if kind == "oom":
        raise MemoryError("CUDA out of memory. Tried to allocate 2 GiB")


@ymir_runner.hookimpl
def ymir_runner_train(context):
    _fail_if_asked(context)
    sizes = {}
    items = list(context.training_set)
    epochs = context.hyper.epochs
    for epoch in range(1, epochs + 1):
        for step, item in enumerate(items, 1):
            for box in item.boxes:
                sizes.setdefault(box.class_id, []).append((box.width, box.height))
            context.progress.steps((epoch - 1) * len(items) + step, epochs * len(items))
        stage = f"epoch_{epoch}"
        folder = context.training_result.stage_dir(stage)
        model = {str(c): [sum(v) / len(v) for v in zip(*wh)] for c, wh in sizes.items()}
        with open(os.path.join(folder, "model.json"), "w") as stream:
            json.dump({"class_names": list(context.class_names), "sizes": model}, stream)
        context.training_result.add_stage(stage, ["model.json"], {"mAP": epoch / (epochs + 1), "mAR": 0.5},
                                          {"tp": epoch, "fp": 1, "fn": 1})


@ymir_runner.hookimpl
def ymir_runner_mine(context):
    context.run_cache["model_loads"] = context.run_cache.get("model_loads", 0) + 1
    items = list(context.candidates)
    for index, item in enumerate(items, 1):
        context.mining_result.add(item.image, os.path.getsize(item.image) / 1e6)
        context.progress.steps(index, len(items))


@ymir_runner.hookimpl
def ymir_runner_infer(context):
    items = list(context.candidates)
    for index, item in enumerate(items, 1):
        if index == 1:
            continue  # left out on purpose: the core must still write an empty entry for it
        context.infer_result.add(item.image, [Detection(-3.4, 2.6, 30.5, 70.2, 0.9, 0)], 64, 48)
        context.progress.steps(index, len(items))
