"""python -m checks progress [APP_DIR]: which stages an app folder has reached."""
from checks.cli import (DEFAULT_APP, Parser, app_folder, app_options, common_options, execute,
                        make_command, output_file, shown_path, summary_json, wrap, write_json)
from checks.manifest import load_manifest, stage_of


def main(args):
    parser = Parser(prog="python -m checks progress",
                    description="Show which stages an app folder has reached.")
    app_options(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but the summary")
    common_options(parser)
    options = parser.parse_args(args)
    stages = load_manifest(options.manifest)
    app_dir = app_folder(options.app_dir or DEFAULT_APP, options.app_dir is None)
    json_file, junit_file = output_file(options.json), output_file(options.junit)

    if not options.quiet:
        print(f"Checking every stage on {shown_path(app_dir)} ", end="", flush=True)
    ticker = None if options.quiet else (lambda r: print(".", end="", flush=True))
    results = list(execute(stages, app_dir, [s.number for s in stages], options, ticker,
                           junit_file).results.values())
    table = stage_table(stages, results)
    highest = max((row["number"] for row in table if row["status"] == "DONE"), default=None)
    write_json(json_file, summary_json(stages, results, highest, {
        "highest_stage": highest, "stages": table}))
    if not options.quiet:
        print("\n")
        broken = next((r for r in results if r.status == "error"), None)
        if broken:
            print(wrap("The app could not be checked: ", broken.observed, indent=2) + "\n")
        for row in table:
            failing = f"  failing: {', '.join(row['failing'])}" if row["failing"] else ""
            print(f"  {row['number']}  {row['title'][:52]:52}  {row['status']:7}{failing}".rstrip())
        print()
    following = next((row for row in table if row["status"] == "PENDING"), None)
    print(f"Highest stage reached: {highest or 'none yet'}", end="")
    if following:
        lesson = stage_of(stages, following["number"]).lesson_path
        print(f". Next: stage {following['number']} ({lesson}); "
              f"`{make_command('check', app_dir, following['number'])}` shows what is missing.")
    else:
        print(". Every stage is done.")
    return 0


def stage_table(stages, results):
    """Each stage DONE when its checks and every earlier stage's checks pass; else PENDING."""
    by_stage = {}
    for r in results:
        by_stage.setdefault(r.expectation.stage, []).append(r)
    table, all_done = [], True
    for stage in stages:
        ran = by_stage.get(stage.number, [])
        failing = [r.expectation.id for r in ran if not r.passed]
        own = not failing and len(ran) == len(stage.expectations)
        all_done = all_done and own
        table.append({"number": stage.number, "title": stage.title, "passes_alone": own,
                      "status": "DONE" if all_done else "PENDING", "failing": failing})
    return table


