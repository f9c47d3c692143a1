"""What the checker, the tests, the notebooks and the tools stand on: the local services, the app
harness, the visitor and memcached's protocol. Standard library only here: `make services` imports
this package with the system python3, before the virtualenv exists."""
