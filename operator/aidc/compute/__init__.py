"""Compute: the pods of a training gang and of a serving Deployment."""
