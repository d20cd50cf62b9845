"""Stubs generated from protos/pipemesh/v1 by scripts/generate-python-client: the API as it is."""
