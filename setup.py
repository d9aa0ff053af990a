"""The C span encoder; everything else about the package is in pyproject.toml.

Optional: without a C compiler the install goes on, and the gateway encodes its spans in Python, the same values at
several times the CPU (gateway/span_json.py, docs/performance.md).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("gateway._spanjson", sources=["gateway/_spanjson.c"], optional=True)])
