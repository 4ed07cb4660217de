"""The core's version: one place, read by setup.cfg (``version = attr: ymir_runner.version.__version__``), the
package's face and the modules that print or pin it (the CLI, the dispatcher's log, the plugin registry, the
scaffold), none of which need import the package's face for it."""

__version__ = "0.4.0"
