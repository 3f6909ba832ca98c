"""Training and evaluation machinery.

- :mod:`detect.engine.launch`: ``train(config, ...)`` and ``evaluate(...)``, what
  tools/train.py and tools/eval.py call;
- :mod:`detect.engine.trainer`: the training loop (step + hooks), :mod:`detect.engine.hooks`;
- :mod:`detect.engine.checkpoint`: ``save_checkpoint`` / ``load_checkpoint`` / ``CheckpointError``;
- :mod:`detect.engine.optim` (optimizers, LR schedules), :mod:`detect.engine.ema`,
  :mod:`detect.engine.evaluation` (validation loop), :mod:`detect.distributed`,
  :mod:`detect.engine.device` (device and AMP mode, autocast; the Predictor uses it too),
  :mod:`detect.engine.data_order`, :mod:`detect.engine.rng`, :mod:`detect.engine.loggers`.

Nothing is imported here, so that ``import detect.engine.checkpoint`` stays light.
"""
