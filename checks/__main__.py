"""python -m checks COMMAND ...: one entry point; each command lives in its own module."""
import importlib
import sys

COMMANDS = {
    "run": "checks.run",
    "progress": "checks.progress",
    "grade": "checks.grade",
    "doctor": "checks.doctor",
    "watch": "checks.watch",
}
USAGE = "usage: python -m checks {" + ",".join(COMMANDS) + "} ..."


def main(argv):
    if not argv or argv[0] not in COMMANDS:
        print(USAGE if not argv or argv[0] in ("-h", "--help") else
              f"checks: unknown command {argv[0]!r}. {USAGE}", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    from checks.cli import invoke

    return invoke(argv[0], importlib.import_module(COMMANDS[argv[0]]).main, argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
