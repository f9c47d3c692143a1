"""The manifest model: steps/steps.toml read once, into Stages and their Expectations.

Every reader uses this: the checker, its pytest plugin, scripts/step_diffs.py (WORKSHOP.md's stage
list) and the course tests. Standard library only. The file says which format it is written in
(`format = 1`); a manifest in another format is refused with one line, never half-read.
"""
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from runtime import ROOT

STEPS = ROOT / "steps"
MANIFEST = STEPS / "steps.toml"
FORMAT = 1
# Another manifest, for tests of the checker itself (python -m checks run --manifest FILE works too).
MANIFEST_ENV = "WORKSHOP_MANIFEST"


class ManifestError(Exception):
    """The manifest is missing, unreadable or malformed; the message says which and where."""


@dataclass
class Expectation:
    stage: str
    id: str
    text: str
    hint: str
    section: str
    points: int = 1
    informational: bool = False
    hints: dict = field(default_factory=dict)  # reason -> hint: its own, then the [problems] ones

    @property
    def test_name(self):
        return f"check_{self.stage}_{self.id}"

    def hint_for(self, reason=None):
        """The hint that is true for a failure for REASON (a short id the check gave)."""
        return self.hints.get(reason, self.hint)


@dataclass
class Stage:
    number: str
    folder: str
    title: str
    lesson: str
    hints: list = field(default_factory=list)
    expectations: list = field(default_factory=list)

    @property
    def path(self):
        return STEPS / self.folder

    @property
    def lesson_path(self):
        return f"steps/{self.folder}/{self.lesson}"


def manifest_path(path=None):
    return Path(path or os.environ.get(MANIFEST_ENV) or MANIFEST)


def load_manifest(path=None):
    """The stages, in order, each with its expectations. Raises ManifestError with one line."""
    path = manifest_path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"manifest {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read manifest {path}: {getattr(exc, 'strerror', None) or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"manifest {path} is not valid TOML: {exc}") from None
    if data.get("format") != FORMAT:
        raise ManifestError(f"manifest {path} is in format {data.get('format', 'unknown')!r}; "
                            f"this checker reads format {FORMAT} (a `format = {FORMAT}` line)")
    stages = []
    try:
        problems = {str(k): str(v) for k, v in data.get("problems", {}).items()}
        for step in data["step"]:
            stage = Stage(str(step["number"]), step["folder"], step["title"], step["lesson"],
                          list(step.get("hints", [])))
            for item in step.get("expect", []):
                stage.expectations.append(Expectation(
                    stage.number, item["id"], item["text"], item["hint"], item["section"],
                    int(item.get("points", 1)), bool(item.get("informational", False)),
                    {**problems, **{str(k): str(v) for k, v in item.get("reasons", {}).items()}}))
            stages.append(stage)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ManifestError(f"manifest {path} is malformed: missing or bad field {exc}") from None
    if not stages:
        raise ManifestError(f"manifest {path} lists no [[step]]")
    return stages


def stage_of(stages, number):
    return next(s for s in stages if s.number == number)


def expectations_by_test(stages):
    return {e.test_name: e for s in stages for e in s.expectations}
