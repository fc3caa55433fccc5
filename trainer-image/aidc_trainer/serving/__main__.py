"""``python -m aidc_trainer.serving``: the model server of an InferenceService's pods."""

from aidc_trainer.serving.server import main

raise SystemExit(main())
