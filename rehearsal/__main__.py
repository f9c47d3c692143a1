"""python -m rehearsal: rehearse `eb deploy` of the repository root on this machine."""
import sys

from rehearsal.report import main

sys.exit(main(["deploy", *sys.argv[1:]]))
