"""``python -m smat_deploy``: the same entry point as the ``smat-deploy`` command."""

from smat_deploy.cli import main

if __name__ == "__main__":
    main()
