"""Runtime: the operator process. kopf's wiring and the parts built once at start-up."""
