"""Load generator for Boardcast: ``python -m bench`` (see bench/README.md)."""
