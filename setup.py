"""Builds the optional C accelerator ``trioalpaca._speedups``; the metadata is in pyproject.toml.

Without a C compiler (or Python's headers) the build leaves it out (``optional=True``) and
trioalpaca runs its pure-Python code instead, with the same results.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("trioalpaca._speedups", ["trioalpaca/_speedups.c"], optional=True),
    ]
)
