"""ymir-runner-sdk: the ``sdk`` executor, which supervises an unchanged ymir_exc-based executor (``ymir-runner
sdk-run -- CMD``) and republishes what it writes through ymir-runner's protocol writers. See docs/sdk-run.md."""

__version__ = "0.1.0"
