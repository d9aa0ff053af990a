"""Fuzz targets for every parser (targets.py), run by atheris in `make fuzz` and by hypothesis in `make test`."""
