"""ymir-runner-sdk's import hook, run by the LEGACY interpreter (Python 3.6 and later: the image's own, not
ymir-runner's): ``sdk-run`` puts this folder first on the command's PYTHONPATH, so Python's ``site`` imports this
module at start-up.

It points an SDK that cannot be pointed elsewhere at the env.yaml ``sdk-run`` wrote: PyPI's ymir-exc 1.1.0 sets
``ymir_exc.settings.DEFAULT_ENV_FILE_PATH = '/in/env.yaml'`` and never reads the ``$DEFAULT_ENV_FILE_PATH`` variable
that modelai's SDK lines read. When ``ymir_exc.settings`` is first imported, the variable's value replaces the
module's ``DEFAULT_ENV_FILE_PATH`` (the SDK's readers look it up at each call). The image's own ``sitecustomize``,
if it has one further along the path, is run afterwards, as it would have been.
"""

import importlib.machinery
import importlib.util
import os
import sys

_MODULE = "ymir_exc.settings"
_VARIABLE = "DEFAULT_ENV_FILE_PATH"
_HERE = os.path.dirname(os.path.abspath(__file__))


class _Loader:
    """The SDK's own loader, and the variable's value set on the module once it ran."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        value = os.environ.get(_VARIABLE)
        if value:
            module.DEFAULT_ENV_FILE_PATH = value


class _SettingsFinder:
    """Finds ``ymir_exc.settings`` with the other finders and wraps its loader."""

    def find_spec(self, name, path=None, target=None):
        if name != _MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _Loader(spec.loader)  # type: ignore[assignment]  # duck-typed, as importlib is
                return spec
        return None


def _install():
    if os.environ.get(_VARIABLE):
        sys.meta_path.insert(0, _SettingsFinder())
    # the image's own sitecustomize, further along the path, runs as it would have
    others = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        sys.modules["sitecustomize"] = module
        spec.loader.exec_module(module)


_install()
