"""The workshop checker, the app harness and the local services."""
