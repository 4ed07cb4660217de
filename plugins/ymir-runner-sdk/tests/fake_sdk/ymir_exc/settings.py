import os

# the SDK's own variable: where env.yaml is read from
DEFAULT_ENV_FILE_PATH = os.environ.get("DEFAULT_ENV_FILE_PATH", "/in/env.yaml")
ES_RUNNING, ES_ERROR = 2, 4
