"""The bench subcommands, one line each, for `python -m demt_exp.bench --help` and each parser's help."""

SUBCOMMANDS = {  # one line each, for `--help`; `model` is the default when no subcommand is named
    "model": "eval and train-step time, memory and component shares of a config, beside its baselines",
    "counts": "FLOPs (forward, train step) and bytes saved for backward, ours beside the official computation",
    "gpu": "a lent GPU's figures: images/s, peak memory, MFU in fp32/bf16/compile, ours and official; DDP check",
    "scaling": "time and memory against image size and number of tasks, with a plot",
    "startup": "seconds each command takes to answer (--help, a config mistake, report presets)",
    "deform": "ChlSpl backends, forward+backward",
    "step": "training-step throughput of a config",
    "data": "loader images/s per worker (NYUD, PASCAL; official transforms, real file formats), workers 8 GPUs need",
    "boundary": "SEISM boundary evaluation images/s on generated maps",
    "linear": "fp32 CPU linear layers: BLAS vs the oneDNN convolution route",
    "weighting": "step time of each loss-weighting method relative to fixed",
}
