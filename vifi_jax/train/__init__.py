"""Training: the optimiser and state, the jitted update, augmentation and blending on the device,
the loop with checkpoints, logging and evaluation."""
