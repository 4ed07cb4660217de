pytest_plugins = ["ymir_runner.testing"]
