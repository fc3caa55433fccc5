"""Network: the rendezvous Service of a gang and the Service of a served model."""
