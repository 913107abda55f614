"""Build script: everything is declared in pyproject.toml except the optional C extension."""
from setuptools import setup

setup()
