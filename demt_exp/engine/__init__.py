"""The run-time engine: the trainer (step and loop), evaluator, checkpoint and resume, distributed launch,
signals, precision and compile, loader streams, and the opt-in CPU routes."""
