"""The ``smat-deploy`` command line: thin wrappers over library functions."""

from smat_deploy.cli.app import app, main

__all__ = ["app", "main"]
