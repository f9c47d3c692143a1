"""python -m checks progress [APP_DIR]: which stages an app folder has reached.

What it prints is rendered from the results file it writes (`report`), so `make progress`, the
file and `grade`'s row for the same results say the same thing (checks/results.py decides).
"""
from checks.cli import (DEFAULT_APP, Parser, app_folder, app_lock, app_options, common_options,
                        execute, make_command, output_file, record, shown_path, write_json)
from checks.manifest import load_manifest, stage_of
from checks.results import stage_table, summary, wrap

STALLED_EXIT = 3


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

    with app_lock(app_dir, json_file):
        if not options.quiet:
            print(f"Checking every stage on {shown_path(app_dir)} ", end="", flush=True)
        ticker = None if options.quiet else (lambda r: print(".", end="", flush=True))
        results = execute(stages, app_dir, [s.number for s in stages], options, ticker, junit_file)
        data = results_file(stages, [r.as_dict() for r in results.results.values()])
        write_json(json_file, data)
        if not json_file:
            record(stages, app_dir, "progress", data["tests"])
    if not options.quiet:
        print("\n")
    print(report(stages, data, app_dir, options.quiet))
    return STALLED_EXIT if data["machine_stalled"] else 0


def results_file(stages, tests):
    """`progress`'s results file: the model's summary, with every stage's status."""
    data = summary(stages, tests, None)
    data.update(step=data["placement"]["highest"], highest_stage=data["placement"]["highest"],
                stages=stage_table(stages, data["tests"]))
    return data


def report(stages, data, app_dir, quiet=False):
    """What `progress` prints for DATA (its results file): the stages, then where the app stands."""
    lines = []
    if not quiet:
        broken = next((t for t in data["tests"] if t["status"] == "error"
                       and t.get("reason") != "machine_stalled"), None)
        if broken:
            lines.append(wrap("The app could not be checked: ", broken["observed"] or "", indent=2) + "\n")
        for row in data["stages"]:
            failing = f"  failing: {', '.join(row['failing'])}" if row["failing"] else \
                "  (passes alone: the stages on both sides do not)" if row["status"] == "PENDING" else ""
            lines.append(f"  {row['number']}  {row['title'][:52]:52}  {row['status']:10}{failing}".rstrip())
        lines.append("")
    place, total = data["placement"], data["points"]
    line = (f"Highest stage reached: {place['highest'] or 'none yet'} "
            f"({total['earned']} of {total['possible']} points)")
    if place["at_fault"]:
        line += f"; at fault: stage {place['at_fault']}"
        also = place["consequences"]
        if also:
            line += f" (which also fails {', '.join(also[:3])}" + \
                (f" and {len(also) - 3} more)" if len(also) > 3 else ")")
    if data["machine_stalled"]:
        line += (f". The machine stalled ({data['machine_stalled']}): the stages NOT JUDGED say "
                 "nothing about your code; check again")
    following = (place["next"] or "").split(" ")[0] or next(
        (row["number"] for row in data["stages"] if row["status"] != "DONE"), None)
    if following:
        lesson = stage_of(stages, following).lesson_path
        line += (f". Next: stage {following} ({lesson}); "
                 f"`{make_command('check', app_dir, following)}` shows what is missing.")
    else:
        line += ". Every stage is done."
    lines.append(line)
    return "\n".join(lines)
