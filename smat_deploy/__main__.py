"""``python -m smat_deploy`` is the ``smat-deploy`` command."""

from smat_deploy.cli import main

main()
