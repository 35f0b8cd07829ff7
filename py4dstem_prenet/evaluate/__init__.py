"""Evaluation on held-out simulations: our networks beside py4DSTEM's classical methods."""
