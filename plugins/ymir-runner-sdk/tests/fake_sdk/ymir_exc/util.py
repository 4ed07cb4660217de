import glob
import os

from . import result_writer


def write_ymir_training_result(cfg, map50, files, id):
    """As the SDK's helper: files=[] means every file of the models folder (glob: hidden files are not matched)."""
    models_dir = cfg["ymir"].output.models_dir
    if not files:
        files = [os.path.basename(path) for path in glob.glob(os.path.join(models_dir, "*")) if os.path.isfile(path)]
    result_writer.write_model_stage(stage_name=id, files=files, mAP=float(map50))
