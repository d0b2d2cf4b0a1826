"""`rlhf run PIPELINE.yaml`: see `pipelines.run`."""

from pipelines.run import main

__all__ = ["main"]
