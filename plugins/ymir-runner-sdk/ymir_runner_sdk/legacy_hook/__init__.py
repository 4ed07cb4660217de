"""A folder put first on the legacy command's PYTHONPATH (see :mod:`.sitecustomize`); nothing of ymir-runner
imports it."""
