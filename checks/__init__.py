"""The stage checker: the manifest, the pytest plugin, the checks and the commands run, progress, grade and doctor."""
