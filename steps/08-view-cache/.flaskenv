# Local settings for `flask` commands. Secrets never go here: export SECRET_KEY in your shell.
FLASK_APP=application
