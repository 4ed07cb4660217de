"""The torch side of evaluation: predict over a validation DataLoader, then score with the core's
:mod:`ymir_runner.evaluation` (COCO mAP via faster-coco-eval, tp/fp/fn)."""

from __future__ import annotations

from ymir_runner.evaluation import DEFAULT_MAX_DETECTIONS, EvaluationResult, evaluate_detections

__all__ = ["EvaluationResult", "evaluate_detections", "evaluate_model"]


def evaluate_model(model, loader, num_classes: int, *, score_threshold: float = 0.25, class_names=None,
                   iou_threshold: float = 0.5, max_detections: int = DEFAULT_MAX_DETECTIONS, **decode_kwargs):
    """Predict over an eval DataLoader (letterboxed dataset) and evaluate against the items' original boxes.

    The decoder keeps up to ``max_detections`` boxes per image. Images that turned out unreadable are left
    out (their replacement is only counted once). Returns ``(EvaluationResult, problems)``: ``problems``
    holds ``unreadable`` (index -> why it does not decode) and ``damaged`` (index -> why its data broke off; used
    as decoded).
    """
    from .decode import predict_batch  # torch-dependent; keep this module importable without a model

    dataset = loader.dataset
    predictions_by_index: dict = {}
    corrupt: dict[int, str] = {}
    damaged: dict[int, str] = {}
    for batch in loader:
        corrupt.update(batch["corrupt"])
        damaged.update(batch.get("damaged", {}))
        detections = predict_batch(model, batch["images"], batch["letterbox"], top_k=max_detections, **decode_kwargs)
        for index, detection in zip(batch["indices"], detections):
            predictions_by_index[index] = detection
    indices = sorted(predictions_by_index)
    ground_truths = [(dataset.boxes[i], dataset.classes[i]) for i in indices]
    predictions = [predictions_by_index[i] for i in indices]
    result = evaluate_detections(
        ground_truths, predictions, num_classes, score_threshold=score_threshold, iou_threshold=iou_threshold,
        max_detections=max_detections, class_names=class_names,
    )
    return result, {"unreadable": corrupt, "damaged": damaged}
