"""python -m checks run NN [APP_DIR]: check an app folder against one stage of the workshop."""
from checks.cli import (DEFAULT_APP, Parser, app_folder, app_options, common_options, execute,
                        output_file, show, shown_path, stage_number, summary_json, write_json)
from checks.manifest import load_manifest, stage_of


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
    if not options.quiet:
        print(f"Stage {number}: {stage.title}")
        print(f"  checking {shown_path(app_dir)} (lesson: {stage.lesson_path})\n", flush=True)
    listener = None if options.quiet else (lambda r: show(r, stages))
    results = list(execute(stages, app_dir, [number], options, listener, junit_file, extra).results.values())

    write_json(json_file, summary_json(stages, results, number))
    counted = [r for r in results if not r.expectation.informational]
    passed = [r for r in counted if r.passed]
    missing = len(stage.expectations) - len(results)
    earned = sum(r.expectation.points for r in passed)
    possible = sum(r.expectation.points for r in counted)
    all_pass = len(passed) == len(counted)
    if options.k:  # a selection: judge what ran, and say what was left out
        verdict = "passes" if all_pass else "does not pass yet"
        line = (f"Selected expectations of stage {number}: {len(passed)} of {len(counted)} pass "
                f"({earned} of {possible} points); {missing} left out by -k")
    else:
        verdict = "passes" if all_pass and not missing else "does not pass yet"
        line = (f"Stage {number} {verdict}: {len(passed)} of {len(counted)} expectations "
                f"({earned} of {possible} points)" + (f"; {missing} not run" if missing else ""))
    stalled = next((r.stall for r in counted if r.reason == "machine_stalled"), None)
    if stalled and all(r.passed or r.reason == "machine_stalled" for r in counted):
        verdict = "not judged"  # nothing the learner did: exit 3, run it again
        line = (f"Stage {number} not judged: the machine stalled ({stalled}); "
                f"nothing here is about your code, run the check again")
    print(("" if options.quiet else "\n") + line)
    return {"passes": 0, "not judged": 3}.get(verdict, 1)


def split_extra(args):
    """Arguments after `--` go to pytest as they are."""
    if "--" in args:
        at = args.index("--")
        return args[:at], args[at + 1:]
    return args, []


