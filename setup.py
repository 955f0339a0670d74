# setup.py - hooks the cffi builder into setuptools; all metadata lives in pyproject.toml
from setuptools import setup

setup(cffi_modules=["ringnet/_build.py:ffibuilder"])
