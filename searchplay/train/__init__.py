"""The self-play trainer: run directories, logging, checkpoints and the training loop."""
