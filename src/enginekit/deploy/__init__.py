"""Deployment outputs: packages (package.py, package_run.py) and Triton model repositories."""
