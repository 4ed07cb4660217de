"""The built-in detector against the ultralytics executor (YOLO26n) on one generated set, at equal CPU time.

    .venv/bin/python bench/bench_ultralytics.py [--cpu-budget 300] [--n-train 300] [--n-val 60] [--img-size 256]
        [--model yolo26n] [--work DIR]

Each engine runs as the platform runs it: ``python -m ymir_runner run --env <tree>/in/env.yaml`` in a process of
its own, the built-in detector in the project's venv (``.venv``, CPU torch), the ultralytics executor in its own
(``.venv-ultralytics``, see the plugin's README), on the same /in files (one generated set of
``ymir_runner_detection.demo``, the plain shapes scene: 3 classes, 1-7 objects from 24 px per image) and from
scratch (no pretrained weights for either). CPU seconds are the run process's and its children's (user + system,
``getrusage``), everything included: start-up, data, stage evaluations, ONNX export.

Equal CPU time: for each engine two calibration runs (1 and 3 epochs, a stage every epoch) give its CPU seconds per
epoch (stage evaluation included) and its fixed cost; the measured run then has as many epochs as fit
``--cpu-budget``, with each engine's own schedule and recipe (template defaults; ``epochs`` a number, which both
train exactly). Both are measured by the same evaluator, the core's (``ymir_runner.evaluation``,
faster-coco-eval) on the same validation images: result.yaml's ``mAP`` (IoU 0.5) and ``mAP50_95`` of the deployed
stage (``best_stage_name``) and of the last stage are printed, with the CPU seconds each run really took.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENVS = {"detection": os.path.join(REPO, ".venv", "bin", "python"),
         "ultralytics": os.path.join(REPO, ".venv-ultralytics", "bin", "python")}


def generate(folder: str, n_train: int, n_val: int, seed: int) -> str:
    """The generated set under ``folder/in``; returns its env.yaml (the built-in detector's task)."""
    from ymir_runner_detection.demo import write_task
    from ymir_runner_detection.synthetic import PLAIN_SCENE

    return write_task(folder, config={}, n_train=n_train, n_val=n_val, n_candidates=0, seed=seed, scene=PLAIN_SCENE)


def task(data_env: str, folder: str, config: dict) -> str:
    """A training task in ``folder`` on the /in files of ``data_env``: its own config.yaml and /out."""
    with open(data_env, encoding="utf-8") as stream:
        env = yaml.safe_load(stream)
    with open(env["input"]["config_file"], encoding="utf-8") as stream:
        base = yaml.safe_load(stream)
    os.makedirs(os.path.join(folder, "in"), exist_ok=True)
    out = os.path.join(folder, "out")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    config_file = os.path.join(folder, "in", "config.yaml")
    with open(config_file, "w", encoding="utf-8") as stream:
        yaml.safe_dump({**base, **config}, stream, sort_keys=False)
    env["input"]["config_file"] = config_file
    old_out = env["output"]["root_dir"]
    env["output"] = {key: value.replace(old_out, out, 1) if isinstance(value, str) else value
                     for key, value in env["output"].items()}
    env_file = os.path.join(folder, "in", "env.yaml")
    with open(env_file, "w", encoding="utf-8") as stream:
        yaml.safe_dump(env, stream, sort_keys=False)
    return env_file


def run(engine: str, env_file: str, weights_dir: str) -> tuple[float, float, dict]:
    """``(CPU s, wall s, result.yaml)`` of one run of ``engine``'s task."""
    environment = {**os.environ, "YMIR_RUNNER_ULTRALYTICS_WEIGHTS": weights_dir}
    environment.pop("YMIR_RUNNER_DISABLE_PLUGINS", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run([VENVS[engine], "-m", "ymir_runner", "run", "--env", env_file], capture_output=True,
                          text=True, env=environment)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        sys.exit(f"{engine} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    with open(os.path.join(os.path.dirname(os.path.dirname(env_file)), "out", "models", "result.yaml")) as stream:
        return cpu, wall, yaml.safe_load(stream)


def engine_config(engine: str, args: argparse.Namespace, epochs: int, save_period: int) -> dict:
    common = {"epochs": epochs, "img_size": args.img_size, "batch_size_per_gpu": 16, "save_period": save_period,
              "export_onnx": True, "plugin": engine, "seed": 0}
    if engine == "detection":
        return common
    return {**common, "model": args.model}


def stage_figures(result: dict) -> dict:
    stages = result["model_stages"]
    last = max(stages, key=lambda name: int(name.rsplit("_", 1)[-1]))
    best = result["best_stage_name"]
    return {"best": best, "best_mAP50": stages[best]["mAP"], "best_mAP50_95": stages[best]["mAP50_95"],
            "last": last, "last_mAP50": stages[last]["mAP"], "last_mAP50_95": stages[last]["mAP50_95"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-budget", type=float, default=300, help="CPU seconds per engine (default 300)")
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument("--n-val", type=int, default=60)
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--model", default="yolo26n", help="the ultralytics executor's model (default yolo26n)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated set")
    parser.add_argument("--work", default=os.path.join(REPO, "bench", ".cache", "bench_ultralytics"))
    args = parser.parse_args()
    for engine, python in VENVS.items():
        if not os.path.exists(python):
            sys.exit(f"{python} is missing: the {engine} engine runs in it (see the README)")
    shutil.rmtree(args.work, ignore_errors=True)
    data_env = generate(os.path.join(args.work, "data"), args.n_train, args.n_val, args.seed)
    weights_dir = os.path.join(args.work, "no-weights")  # empty: both engines from scratch
    os.makedirs(weights_dir)
    rows = []
    for engine in VENVS:
        cpu1, _, _ = run(engine, task(data_env, os.path.join(args.work, f"{engine}-1"),
                                      engine_config(engine, args, 1, 1)), weights_dir)
        cpu3, _, _ = run(engine, task(data_env, os.path.join(args.work, f"{engine}-3"),
                                      engine_config(engine, args, 3, 1)), weights_dir)
        per_epoch = max((cpu3 - cpu1) / 2, 1e-3)
        fixed = max(cpu1 - per_epoch, 0.0)
        epochs = max(1, int((args.cpu_budget - fixed) / per_epoch))
        print(f"[bench_ultralytics] {engine}: {per_epoch:.1f} CPU s per epoch, {fixed:.1f} CPU s fixed -> "
              f"{epochs} epochs in {args.cpu_budget:.0f} CPU s", flush=True)
        cpu, wall, result = run(engine, task(data_env, os.path.join(args.work, engine),
                                             engine_config(engine, args, epochs, 0)), weights_dir)
        rows.append({"engine": engine, "epochs": epochs, "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
                     **stage_figures(result)})
        print(f"[bench_ultralytics] {json.dumps(rows[-1])}", flush=True)
    print(f"\n{args.n_train} training / {args.n_val} validation images (plain shapes, 3 classes), img_size "
          f"{args.img_size}, from scratch, budget {args.cpu_budget:.0f} CPU s per engine, {os.cpu_count()} CPUs")
    print(f"{'engine':<12} {'epochs':>6} {'CPU s':>7} {'wall s':>7}  {'deployed mAP50 / 50-95':>24}  "
          f"{'last mAP50 / 50-95':>20}")
    for row in rows:
        name = row["engine"] if row["engine"] == "detection" else f"{row['engine']} ({args.model})"
        print(f"{name:<12} {row['epochs']:>6} {row['cpu_s']:>7.1f} {row['wall_s']:>7.1f}  "
              f"{row['best_mAP50']:>10.3f} / {row['best_mAP50_95']:.3f} ({row['best']})  "
              f"{row['last_mAP50']:>8.3f} / {row['last_mAP50_95']:.3f}")
    with open(os.path.join(args.work, "summary.json"), "w", encoding="utf-8") as stream:
        json.dump({"args": vars(args), "rows": rows}, stream, indent=1)


if __name__ == "__main__":
    main()
