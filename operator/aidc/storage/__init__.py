"""Storage: the claims a job reads data from and writes checkpoints and models to."""
