"""python -m checks run NN [APP_DIR]: check an app folder against one stage of the workshop.

Exit status: 0 the stage passes, 1 it does not, 2 bad input (or another checker holds the app),
3 the machine stalled (no verdict on the learner's code), 130 interrupted.
"""
from checks.cli import (DEFAULT_APP, Parser, app_folder, app_lock, app_options, common_options,
                        execute, output_file, record, show, shown_path, stage_number, write_json)
from checks.manifest import load_manifest, stage_of
from checks.results import counted, failed, points, stage_status, summary

STALLED_EXIT = 3


def main(args):
    args, extra = split_extra(args)
    parser = Parser(prog="python -m checks run",
                    description="Check an app folder against one stage of the workshop.")
    parser.add_argument("stage", help="the stage number, 01 to 09")
    app_options(parser)
    parser.add_argument("-k", metavar="EXPR", help="only the expectations whose name matches")
    parser.add_argument("-x", action="store_true", help="stop at the first failure")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the summary line")
    common_options(parser)
    options = parser.parse_args(args)
    stages = load_manifest(options.manifest)
    number = stage_number(options.stage, stages)
    app_dir = app_folder(options.app_dir or DEFAULT_APP, options.app_dir is None)
    json_file, junit_file = output_file(options.json), output_file(options.junit)
    extra += (["-k", options.k] if options.k else []) + (["-x"] if options.x else [])

    stage = stage_of(stages, number)
    with app_lock(app_dir, json_file):
        if not options.quiet:
            print(f"Stage {number}: {stage.title}")
            print(f"  checking {shown_path(app_dir)} (lesson: {stage.lesson_path})\n", flush=True)
        listener = None if options.quiet else (lambda r: show(r, stages))
        results = execute(stages, app_dir, [number], options, listener, junit_file, extra)
        data = summary(stages, [r.as_dict() for r in results.results.values()], number)
        write_json(json_file, data)
        if not json_file and not options.k:  # a selection is no verdict on the stage
            record(stages, app_dir, f"run {number}", data["tests"], [number])
    tests = data["tests"]
    total = points(tests)
    judged = [t for t in tests if counted(t)]
    passing = [t for t in judged if not failed(t)]
    missing = len(stage.expectations) - len(tests)
    status = stage_status(stage, tests)
    if status == "NOT JUDGED":
        line = (f"Stage {number} was not judged: the machine stalled ({data['machine_stalled']}); "
                "this says nothing about your code: check again")
    elif options.k:  # a selection: judge what ran, and say what was left out
        line = (f"Selected expectations of stage {number}: {len(passing)} of {len(judged)} pass "
                f"({total['earned']} of {total['possible']} points); {missing} left out by -k")
    else:
        verdict = "passes" if status == "passes" else "does not pass yet"
        line = (f"Stage {number} {verdict}: {len(passing)} of {len(judged)} expectations "
                f"({total['earned']} of {total['possible']} points)"
                + (f"; {missing} not run" if missing else ""))
    print(("" if options.quiet else "\n") + line)
    if status == "NOT JUDGED":
        return STALLED_EXIT
    if options.k:
        return 0 if len(passing) == len(judged) else 1
    return 0 if status == "passes" else 1


def split_extra(args):
    """Arguments after `--` go to pytest as they are."""
    if "--" in args:
        at = args.index("--")
        return args[:at], args[at + 1:]
    return args, []
