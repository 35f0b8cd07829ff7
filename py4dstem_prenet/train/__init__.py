"""Training of the three networks (``prenet train denoise|center|ellipse``): one resumable loop,
task-specific batches and losses, weights written with their manifest entry."""
