import os

from . import LINE

# where env.yaml is read from: the SDK's own variable, except in PyPI's 1.1.0, which has none
DEFAULT_ENV_FILE_PATH = "/in/env.yaml" if LINE == "1.1-pypi" else os.environ.get("DEFAULT_ENV_FILE_PATH",
                                                                                   "/in/env.yaml")
ES_RUNNING, ES_ERROR = 2, 4
