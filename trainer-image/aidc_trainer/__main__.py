"""``python -m aidc_trainer``: see ``aidc_trainer.cli``."""

from aidc_trainer.cli import entrypoint

if __name__ == "__main__":
    entrypoint()
