"""Inference and mining with a model the plugin trained, alone and combined in one run."""

from __future__ import annotations

import json
import math
import os

import pytest
import yaml
from helpers import candidates, last_line, make_task, read_result, run

from ymir_runner import ReturnCode
from ymir_runner.testing import RunOutcome, monitor_writes


def check_infer_result(folder):
    with open(folder / "out" / "infer-result.json") as stream:
        detection = json.load(stream)["detection"]
    assert set(detection) == {os.path.basename(path) for path in candidates(folder)}
    for entry in detection.values():
        assert set(entry) == {"boxes"}
        for box in entry["boxes"]:
            assert set(box) == {"box", "class_name", "score"}
            assert set(box["box"]) == {"x", "y", "w", "h"}
            assert all(type(value) is int for value in box["box"].values())
            assert box["box"]["w"] > 0 and box["box"]["h"] > 0
            assert box["class_name"] in {"circle", "rectangle", "triangle"}
            assert 0.0 <= box["score"] <= 1.0
    return detection


def check_result_tsv(folder):
    rows = [line.rstrip("\n").split("\t") for line in open(folder / "out" / "result.tsv")]
    assert sorted(path for path, _ in rows) == sorted(candidates(folder))
    scores = [float(score) for _, score in rows]
    assert all(math.isfinite(score) for score in scores)
    assert scores == sorted(scores, reverse=True)
    return rows


def test_mining_and_inference_in_one_run(trained, tmp_path, capsys):
    env_file = make_task(trained, tmp_path, ("mining", "infer"), {"mining_algorithm": "aldd"})
    with monitor_writes() as writes:
        assert run(env_file) == 0
    err = capsys.readouterr().err
    assert err.count("model /") == 1  # one model load for both tasks
    detection = check_infer_result(tmp_path)
    # It detects: boxes on 8 of the 12 candidates at the model's own (F1-optimal) threshold (2026-12-01).
    assert sum(1 for entry in detection.values() if entry["boxes"]) >= len(detection) / 2
    check_result_tsv(tmp_path)
    # ymir-runner verify: mining and infer outputs covering every candidate, config.yaml's classes, task_id demo
    report = RunOutcome(0, err, str(tmp_path / "out"), env_file).verify()
    assert report.ok, report.to_text()
    lines = [text.splitlines() for text in writes]
    percents = [float(line[0].split("\t")[2]) for line in lines]
    assert percents == sorted(percents) and percents[-1] == 1.0
    mining_percents = [p for p, line in zip(percents, lines) if len(line) > 1 and line[1].startswith("mining")]
    infer_percents = [p for p, line in zip(percents, lines) if len(line) > 1 and line[1].startswith("infer")]
    assert mining_percents and max(mining_percents) <= 0.5
    assert infer_percents and min(infer_percents) >= 0.5


def test_inference_boxes_match_the_generated_objects(trained, tmp_path):
    """Candidates are freshly generated shapes (1-4 per image): at the model's own operating point (the
    template's conf_threshold 0), the detector reports about as many boxes as there are objects."""
    env_file = make_task(trained, tmp_path, ("infer",))
    assert run(env_file) == 0
    detection = check_infer_result(tmp_path)
    assert sum(len(entry["boxes"]) for entry in detection.values()) >= len(detection)


def test_inference_uses_the_models_f1_optimal_threshold_unless_one_is_set(trained, tmp_path, capsys):
    from ymir_runner_detection.checkpoint import load_checkpoint

    root, _, _ = trained
    result = read_result(root)
    best = result["best_stage_name"]
    threshold = result["model_stages"][best]["conf_thr"]
    assert load_checkpoint(os.path.join(root, "out", "models", best, "model.pt")).score_threshold == threshold
    env_file = make_task(trained, tmp_path / "auto", ("infer",))  # the template's conf_threshold: 0
    assert run(env_file) == 0
    assert f"boxes scoring at least {threshold:.3f} (the model's F1-optimal threshold" in capsys.readouterr().err
    scores = [box["score"] for entry in check_infer_result(tmp_path / "auto").values() for box in entry["boxes"]]
    assert scores and min(scores) >= threshold - 1e-6
    env_file = make_task(trained, tmp_path / "set", ("infer",), {"conf_threshold": 0.01})
    assert run(env_file) == 0
    low = [box["score"] for entry in check_infer_result(tmp_path / "set").values() for box in entry["boxes"]]
    assert len(low) > len(scores) and min(low) < threshold


@pytest.mark.parametrize("algorithm", ["random", "entropy", "aldd", "cald"])
def test_every_mining_algorithm_scores_every_candidate(trained, tmp_path, algorithm):
    env_file = make_task(trained, tmp_path, ("mining",), {"mining_algorithm": algorithm}, n_candidates=6)
    assert run(env_file) == 0
    rows = check_result_tsv(tmp_path)
    first = [path for path, _ in rows]
    # deterministic: the same task gives the same ranking
    os.remove(tmp_path / "out" / "result.tsv")
    assert run(env_file) == 0
    assert [path for path, _ in check_result_tsv(tmp_path)] == first


def test_class_weights_change_the_ranking_scale(trained, tmp_path):
    env_file = make_task(trained, tmp_path, ("mining",), {"mining_algorithm": "entropy"}, n_candidates=6)
    assert run(env_file) == 0
    plain = {path: float(score) for path, score in check_result_tsv(tmp_path)}
    config_file = tmp_path / "in" / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["class_distribution_scores"] = "2,2,2"
    config_file.write_text(yaml.safe_dump(config))
    assert run(env_file) == 0
    doubled = {path: float(score) for path, score in check_result_tsv(tmp_path)}
    assert doubled == pytest.approx({path: 2 * score for path, score in plain.items()}, rel=1e-4)


def test_class_names_must_match_the_model(trained, tmp_path, capsys):
    env_file = make_task(trained, tmp_path, ("infer",))
    config_file = tmp_path / "in" / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["class_names"] = ["cat", "dog"]
    config_file.write_text(yaml.safe_dump(config))
    assert run(env_file) != 0
    line = last_line(capsys)
    assert line.startswith(f"ymir-runner: error {int(ReturnCode.MODEL)}:")
    assert "['circle', 'rectangle', 'triangle']" in line and "['cat', 'dog']" in line


def test_no_checkpoint_is_300004_naming_what_was_found(trained, tmp_path, capsys):
    env_file = make_task(trained, tmp_path, ("infer",))
    config_file = tmp_path / "in" / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["model_params_path"] = [path for path in config["model_params_path"] if path.endswith(".onnx")]
    config_file.write_text(yaml.safe_dump(config))
    assert run(env_file) != 0
    line = last_line(capsys)
    assert line.startswith(f"ymir-runner: error {int(ReturnCode.MODEL)}:") and "model.onnx" in line


def test_several_checkpoints_use_the_best_stage(trained, tmp_path, capsys):
    stages = sorted(read_result(trained[0])["model_stages"])
    env_file = make_task(trained, tmp_path, ("infer",), stages=stages)
    assert run(env_file) == 0
    best = read_result(trained[0])["best_stage_name"]
    assert f"models/{best}/model.pt" in capsys.readouterr().err
    (tmp_path / "in" / "models" / "ymir-info.yaml").unlink()
    assert run(env_file) != 0
    assert "names no best stage" in last_line(capsys)


def test_unreadable_candidate_gets_an_empty_entry(trained, tmp_path, capsys):
    env_file = make_task(trained, tmp_path, ("infer",), n_candidates=4)
    broken = candidates(tmp_path)[0]
    with open(broken, "wb") as stream:
        stream.write(b"\x89PNG\r\n\x1a\n truncated")
    assert run(env_file) == 0
    assert check_infer_result(tmp_path)[os.path.basename(broken)] == {"boxes": []}
    assert "1 unreadable image" in capsys.readouterr().err


def test_decoding_on_threads_ahead_of_the_model_gives_the_same_result(trained, tmp_path, capsys):
    """num_workers_per_gpu: the threads that decode and letterbox the next batches while the model runs (the core's
    loop, one process); 0 decodes in the model's thread. The result is the same, entry for entry."""
    results = {}
    for workers in (0, 3):
        folder = tmp_path / f"workers{workers}"
        env_file = make_task(trained, folder, ("infer",), {"num_workers_per_gpu": workers, "batch_size_per_gpu": 2},
                             n_candidates=7)
        assert run(env_file) == 0
        results[workers] = check_infer_result(folder)
    err = capsys.readouterr().err
    assert "decoded on the model's thread" in err and "decoded on 3 threads ahead of the model" in err
    assert results[0] == results[3] and any(entry["boxes"] for entry in results[0].values())
