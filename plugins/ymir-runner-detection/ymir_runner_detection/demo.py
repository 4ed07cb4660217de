"""``ymir-runner demo``: a real, short training run on generated data, in a YMIR /in + /out tree.

The tree is exactly what the platform would mount (env.yaml, config.yaml, index files, assets,
annotations); the run goes through the same dispatcher as ``ymir-runner run``. At the end it prints the mAP
reached next to what the demo should reach (:data:`EXPECTED_MAP50`, measured by ``bench/bench_demo.py``) and
saves a picture of validation images with their ground truth and the deployed stage's predictions side by side.

``ymir-runner demo --object-type 3`` does the same for semantic segmentation (executor ``semantic-fpn``): generated
scenes exported as the platform exports ``seg-coco:raw``, the platform's mIoU and mAcc of the deployed stage, and a
picture of each validation image with its ground-truth label map beside the predicted one.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from typing import Any, Mapping, Sequence

from ymir_runner.evaluation import DEFAULT_SCORE_THRESHOLD

from . import EXECUTOR_NAME
from .recipe import epochs_for_steps
from .templates import TRAINING_DEFAULTS

#: Optimizer steps and training images of the demo's run (about 3-4 minutes on 2 CPU cores).
DEMO_STEPS = 500
DEMO_IMAGES = 300
#: The demo's changes to the training template: a short run on small images of the plain shapes scene, at half
#: the template's learning rate: before the box size prior (set_box_size_prior), at 200 steps the template's 0.006
#: reached mAP@0.5 0.10 / 0.24 (seeds 0 / 2) where 0.003 reached 0.56 / 0.38, and at 500 steps 0.006 left seed 2
#: at 0.50 (seeds 0 and 1: 0.95, 0.94). Not re-measured with the prior. The epochs come from the step count:
#: :func:`demo_epochs` (27 epochs of 19 steps for the defaults: 513 steps).
DEMO_CONFIG = {"img_size": 256, "learning_rate": 0.003}
#: bench/bench_demo.py with these: mAP@0.5 0.987 / 0.991 / 0.988 (seeds 0-2; 0.914 / 0.972 / 0.947 before the
#: box size prior).
#: What the demo's deployed stage reaches with its defaults: the lowest mAP@0.5 of 3 seeds (bench/bench_demo.py).
EXPECTED_MAP50 = 0.9
#: Validation images in the demo's picture, and where it is saved (in the demo's folder).
PICTURE_IMAGES = 4
PICTURE_FILE = "demo-predictions.png"
GAP = 6
TRUTH_COLOR, PREDICTION_COLOR = (0, 160, 0), (220, 0, 0)


def write_task(root: str, **options: Any) -> str:
    """Generate the synthetic dataset under ``root/in`` and write env.yaml + config.yaml; return env.yaml.
    The options are :func:`write_generated_task`'s."""
    return write_generated_task(root, **options)[0]


def write_generated_task(root: str, *, kinds: tuple[str, ...] = ("training",), config: Mapping[str, Any] | None = None,
                         n_train: int = 160, n_val: int = 40, n_candidates: int = 20, seed: int = 0,
                         annotation_format: str = "det-ark", n_corrupt_train: int = 0,
                         scene: Any = None) -> tuple[str, Any]:
    """:func:`write_task`, returning ``(env.yaml path, the generator's SyntheticDataset)``. ``scene`` (a
    :class:`~.synthetic.SceneConfig`) sets how hard the images are (default: tiny objects, occlusion, clutter)."""
    from ymir_runner.testing import write_task_files  # not at import: `ymir-runner --help` must not load pytest

    from .synthetic import generate

    formats = (annotation_format, "det-voc" if annotation_format == "det-ark" else "det-ark")
    dataset = generate(root, n_train=n_train, n_val=n_val, n_candidates=n_candidates, seed=seed,
                       annotation_formats=formats, n_corrupt_train=n_corrupt_train, scene=scene)
    # The generator wrote the index files where env.yaml names them: <root>/in/{train,val,candidate}-index.tsv.
    # config.yaml: the keys the platform writes come from the core's writer (protocol.env.config_document)
    task_config: dict[str, Any] = {"class_names": list(dataset.class_names), "plugin": EXECUTOR_NAME, **(config or {})}
    env_file = write_task_files(root, kinds, task_config, task_id="demo", annotation_format=annotation_format)
    return env_file, dataset


def demo_epochs(images: int, steps: int) -> int:
    """The epochs of a demo run of at least ``steps`` optimizer steps on ``images`` training images (the template's
    batch): the demo says how long it trains in steps, config key ``epochs`` says it in epochs."""
    return epochs_for_steps(images, TRAINING_DEFAULTS["batch_size_per_gpu"], steps)


def run_demo(args: argparse.Namespace) -> int:
    if args.object_type == SEMANTIC_SEGMENTATION:
        return run_semantic_demo(args)
    args.steps = args.steps or DEMO_STEPS
    args.images = args.images or DEMO_IMAGES
    from ymir_runner import OptionalOutputs, read_yaml, run

    from .synthetic import PLAIN_SCENE

    config = dict(DEMO_CONFIG, epochs=args.epochs or demo_epochs(args.images, args.steps), seed=args.seed)
    if args.model:
        config["model"] = args.model
    folder = os.path.abspath(args.folder)
    print(f"writing a synthetic YMIR task under {folder} ...", flush=True)
    env_file, dataset = write_generated_task(folder, config=config, n_train=args.images,
                                             n_val=max(args.images // 4, 8), seed=args.seed, scene=PLAIN_SCENE)
    code = run(env_file, registry=args.registry)
    out_dir = os.path.join(folder, "out")
    result_file = os.path.join(out_dir, "models", "result.yaml")
    if code != 0 or not os.path.exists(result_file):
        print(f"the demo run failed (exit code {code}); see {os.path.join(out_dir, 'monitor.txt')}")
        return code or 1
    result = read_yaml(result_file, "result file")
    best = result["model_stages"][result["best_stage_name"]]
    iou = result.get("evaluate_config", {}).get("iou_thr", 0.5)
    weights = os.path.join(out_dir, "models", best["stage_name"])
    with OptionalOutputs().guard("demo picture") as drawn:  # the run succeeded: a picture that fails is not news
        picture = save_picture(os.path.join(weights, "model.pt"), dataset.val_items[:PICTURE_IMAGES],
                               os.path.join(folder, PICTURE_FILE))
    defaults = not args.epochs and args.steps == DEMO_STEPS and args.images == DEMO_IMAGES and not args.model
    expected = (f"the demo reaches mAP@0.5 >= {EXPECTED_MAP50:.2f} with its defaults" if defaults else
                f"with its defaults the demo reaches mAP@0.5 >= {EXPECTED_MAP50:.2f}; these settings differ")
    print("\nymir-runner demo finished")
    print(f"  best stage      : {best['stage_name']}: mAP@{iou:g} {best['mAP']:.3f}, mAP50-95 "
          f"{best['mAP50_95']:.3f}, mAR@{iou:g} {best['mAR']:.3f} ({expected})")
    print(f"  picture         : {picture} (left: ground truth; right: predictions of the best stage)" if drawn.ok
          else f"  picture         : not drawn ({drawn.reason})")
    print_locations(weights, best["files"], result_file, out_dir, env_file)
    return 0


def print_locations(weights: str, files: list[str], result_file: str, out_dir: str, env_file: str) -> None:
    """The closing lines of a demo: where the best stage's files, result.yaml, monitor.txt and the tensorboard
    logs are, and the command that runs the same task again."""
    print(f"  weights         : {weights}/ ({', '.join(files)})")
    print(f"  result.yaml     : {result_file}")
    print(f"  monitor.txt     : {os.path.join(out_dir, 'monitor.txt')}")
    print(tensorboard_hint(os.path.join(out_dir, "tensorboard")))
    print(f"  run it yourself : ymir-runner run --env {env_file}")


def tensorboard_hint(logdir: str, installed: bool | None = None) -> str:
    """The demo's lines on its tensorboard logs: the command that shows them and, where the viewer is not installed
    (``installed``: found in this environment, by default), how to install it. The core writes the logs with
    tensorboardX, which has no viewer; ymir-runner offers it as the extra ``tensorboard``."""
    line = f"  tensorboard     : tensorboard --logdir {logdir}"
    if installed is None:
        installed = importlib.util.find_spec("tensorboard") is not None
    if installed:
        return line
    return (f"{line}\n                    (the viewer is not installed: `pip install tensorboard` in this environment, "
            'or ymir-runner\'s extra, `pip install -e ".[tensorboard]"` in its checkout)')


def save_picture(checkpoint_file: str, items: Sequence[tuple[Any, Any, Any]], path: str) -> str:
    """One PNG with a row per validation image: ground truth left (green), the model's predictions right (red,
    with scores), at the model's stored score threshold (0.25 for a model without one). ``items`` are the
    generator's ``(image path, boxes [N,4] float pixel-edge x1 y1 x2 y2, classes [N])``. Returns ``path``."""
    from PIL import Image

    from .checkpoint import load_checkpoint
    from .engine import load_image
    from .predict import predict_images

    checkpoint = load_checkpoint(checkpoint_file)
    threshold = DEFAULT_SCORE_THRESHOLD if checkpoint.score_threshold is None else checkpoint.score_threshold
    images = [load_image(image) for image, _, _ in items]
    predictions = predict_images(checkpoint.build_model(), [str(image) for image, _, _ in items], checkpoint.img_size,
                                 score_threshold=threshold, top_k=100)
    rows = []
    for image, (_, boxes, classes), found in zip(images, items, predictions):
        truth, predicted = Image.fromarray(image), Image.fromarray(image)
        for box, cls in zip(boxes, classes):
            _label(truth, box, checkpoint.class_names[int(cls)], TRUTH_COLOR)
        for box, score, cls in zip(found.boxes, found.scores, found.classes):
            _label(predicted, box, f"{checkpoint.class_names[int(cls)]} {score:.2f}", PREDICTION_COLOR)
        row = Image.new("RGB", (truth.width * 2 + GAP, truth.height), "white")
        row.paste(truth, (0, 0))
        row.paste(predicted, (truth.width + GAP, 0))
        rows.append(row)
    sheet = Image.new("RGB", (max(row.width for row in rows), sum(row.height + GAP for row in rows) - GAP), "white")
    top = 0
    for row in rows:
        sheet.paste(row, (0, top))
        top += row.height + GAP
    sheet.save(path)
    return path


def _label(image: Any, box: Any, text: str, color: tuple[int, int, int]) -> None:
    """A box outline and its label, white on the box's colour above its top-left corner (nothing for a box that
    cannot be drawn: see :func:`ymir_runner.pictures.pixel_rectangle`)."""
    from PIL import ImageDraw

    from ymir_runner.pictures import pixel_rectangle

    rectangle = pixel_rectangle(box, image.width, image.height)
    if rectangle is None:
        return
    draw = ImageDraw.Draw(image)
    x1, y1, x2, y2 = rectangle
    draw.rectangle(rectangle, outline=color, width=max(1, min(2, x2 - x1 + 1, y2 - y1 + 1)))
    left, top, right, bottom = draw.textbbox((x1, y1), text)
    lift = min(bottom - top + 2, y1)
    draw.rectangle([left, top - lift, right + 2, bottom - lift], fill=color)
    draw.text((x1 + 1, y1 - lift), text, fill=(255, 255, 255))


# --- semantic segmentation (object type 3) ----------------------------------------------------------------------

SEMANTIC_SEGMENTATION = 3
#: Training images of the semantic demo's run: the scale of issue 28's prototype (240 generated 160 px scenes,
#: batch 8), on the plain scene (large shapes, no occlusion). Its optimizer steps are the training template's
#: ``min_steps`` (what ``epochs: auto`` trains at least: the recipe's one home); at 600 steps (before the Dice loss)
#: the demo's deployed stage reached mIoU 0.285 (seed 0, 609 s wall on 2 CPUs shared with other jobs).
SEMANTIC_DEMO_IMAGES = 240
#: The semantic demo's changes to its training template.
SEMANTIC_DEMO_CONFIG = {"img_size": 160}
SEMANTIC_PICTURE_FILE = "demo-segmentation.png"
#: How strongly a class's colour covers its pixels in the picture (the image shows through).
OVERLAY_ALPHA = 0.55


def run_semantic_demo(args: argparse.Namespace) -> int:
    """``ymir-runner demo --object-type 3``: generate scenes, train ``semantic-fpn``, print the deployed stage's
    platform mIoU / mAcc and save the picture (:func:`save_label_map_picture`)."""
    from ymir_runner import OptionalOutputs, read_yaml, run
    from ymir_runner.testing import write_task_files  # not at import: `ymir-runner --help` must not load pytest

    from . import SEMANTIC_EXECUTOR_NAME
    from .synthetic import PLAIN_SCENE, generate_segmentation
    from .templates import SEMANTIC_TRAINING_DEFAULTS

    images = args.images or SEMANTIC_DEMO_IMAGES
    steps = args.steps or SEMANTIC_TRAINING_DEFAULTS["min_steps"]
    epochs = args.epochs or epochs_for_steps(images, SEMANTIC_TRAINING_DEFAULTS["batch_size_per_gpu"], steps)
    config: dict[str, Any] = dict(SEMANTIC_DEMO_CONFIG, epochs=epochs, seed=args.seed, plugin=SEMANTIC_EXECUTOR_NAME)
    if args.model:
        config["model"] = args.model
    folder = os.path.abspath(args.folder)
    print(f"writing a synthetic YMIR semantic segmentation task under {folder} ...", flush=True)
    dataset = generate_segmentation(folder, n_train=images, n_val=max(images // 4, 8), n_candidates=0,
                                    seed=args.seed, scene=PLAIN_SCENE)
    env_file = write_task_files(folder, ("training",), {"class_names": list(dataset.class_names), **config},
                                task_id="demo", object_type=SEMANTIC_SEGMENTATION)
    code = run(env_file, registry=args.registry)
    out_dir = os.path.join(folder, "out")
    result_file = os.path.join(out_dir, "models", "result.yaml")
    if code != 0 or not os.path.exists(result_file):
        print(f"the demo run failed (exit code {code}); see {os.path.join(out_dir, 'monitor.txt')}")
        return code or 1
    result = read_yaml(result_file, "result file")
    best = result["model_stages"][result["best_stage_name"]]
    weights = os.path.join(out_dir, "models", best["stage_name"])
    with OptionalOutputs().guard("demo picture") as drawn:  # the run succeeded: a picture that fails is not news
        picture = save_label_map_picture(os.path.join(weights, "model.pt"), dataset.val_items[:PICTURE_IMAGES],
                                         os.path.join(folder, SEMANTIC_PICTURE_FILE))
    print("\nymir-runner demo (semantic segmentation) finished")
    print(f"  best stage      : {best['stage_name']}: mIoU {best['mIoU']:.3f}, mAcc {best['mAcc']:.3f} (the "
          f"platform's scores of the validation images' label maps; {epochs} epochs on {images} images)")
    print(f"  picture         : {picture} (left: ground truth; right: the best stage's label maps)" if drawn.ok
          else f"  picture         : not drawn ({drawn.reason})")
    print_locations(weights, best["files"], result_file, out_dir, env_file)
    return 0


def colored_label_map(image: Any, labels: Any) -> Any:
    """``image`` (``[H, W, 3]`` uint8 RGB) in grey, with each class's pixels of ``labels`` (``[H, W]`` class ids,
    255 unlabelled: left grey) covered by the class's colour (``ymir_runner.pictures.PALETTE``), as a Pillow image:
    on grey, a class's colour is not mistaken for the colour of what it covers."""
    import numpy as np
    from PIL import Image

    from ymir_runner import IGNORE_LABEL
    from ymir_runner.pictures import PALETTE

    palette = np.array(PALETTE, dtype=np.float32)
    labelled = labels != IGNORE_LABEL
    grey = np.asarray(Image.fromarray(image).convert("L"), dtype=np.float32)
    mixed = np.repeat(grey[:, :, None], 3, axis=2)
    colors = palette[labels[labelled].astype(np.int64) % len(palette)]
    mixed[labelled] = (1 - OVERLAY_ALPHA) * mixed[labelled] + OVERLAY_ALPHA * colors
    return Image.fromarray(mixed.round().astype(np.uint8))


def save_label_map_picture(checkpoint_file: str, items: Sequence[tuple[Any, Any]], path: str) -> str:
    """One PNG with a row per validation image: its ground-truth label map left, the model's label map right (each
    class in its colour over the image, unlabelled pixels plain), predicted as inference predicts them (decoded by
    the project's rules, letterboxed to the model's size, mapped back to the stored pixels). ``items`` are the
    generator's ``(image path, label map [H, W] uint8)``. Returns ``path``."""
    from PIL import Image

    from ymir_runner import decode_image

    from .checkpoint import load_checkpoint
    from .predict import decode_side, letterboxed
    from .semantic.inference import semantic_predictions

    checkpoint = load_checkpoint(checkpoint_file)
    model = checkpoint.build_model().eval()
    rows = []
    for image_path, truth in items:
        decoded = decode_image(str(image_path), decode_side(checkpoint.img_size))
        (prediction,) = semantic_predictions(model, [letterboxed(decoded, checkpoint.img_size)], "cpu")
        predicted = prediction(decoded.width, decoded.height, decoded.factor)
        pixels = decode_image(str(image_path)).pixels
        left, right = colored_label_map(pixels, truth), colored_label_map(pixels, predicted.labels)
        row = Image.new("RGB", (left.width * 2 + GAP, left.height), "white")
        row.paste(left, (0, 0))
        row.paste(right, (left.width + GAP, 0))
        rows.append(row)
    sheet = Image.new("RGB", (max(row.width for row in rows), sum(row.height + GAP for row in rows) - GAP), "white")
    top = 0
    for row in rows:
        sheet.paste(row, (0, top))
        top += row.height + GAP
    sheet.save(path)
    return path


def add_demo_command(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="train the detection plugin on generated data (a real, short run)")
    parser.add_argument("folder", nargs="?", default="demo-run",
                        help="where to build /in and /out (default ./demo-run)")
    parser.add_argument("--object-type", type=int, choices=(2, SEMANTIC_SEGMENTATION), default=2,
                        help="2: detection (executor detection); 3: semantic segmentation (executor semantic-fpn, "
                             "a picture of ground-truth beside predicted label maps) (default 2)")
    parser.add_argument("--steps", type=int, default=0,
                        help=f"optimizer steps of the run (default {DEMO_STEPS}; with --object-type 3 the "
                             "semantic training template's min_steps)")
    parser.add_argument("--epochs", type=int, default=0,
                        help="train exactly this many epochs instead of --steps")
    parser.add_argument("--images", type=int, default=0,
                        help=f"training images to generate (default {DEMO_IMAGES}; {SEMANTIC_DEMO_IMAGES} with "
                             "--object-type 3); a quarter as many for validation")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the training (default 0)")
    parser.add_argument("--model", default="", help="model size (default: the template's)")
    parser.set_defaults(handler=run_demo)
