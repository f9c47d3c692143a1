"use strict";
// The learner's app: its stages and the first one that does not pass, from the checker's results
// file (/api/app). Every string in it comes from the learner's app or the checker: textContent only.
// $, cell and poll come from common.js.

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 60) return seconds + " s ago";
  if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
  return Math.round(seconds / 3600) + " h ago";
}

function summary(app) {
  const r = app.results;
  if (!r && !app.found) return "No app in " + app.app + " yet: `make workspace` creates one.";
  if (!r) return "Not checked yet: run `make watch` in a terminal, or press Check now.";
  const parts = ["Checked " + ago(r.age) + (r.command ? " (" + r.command + ")" : "")];
  parts.push("highest stage reached: " + (r.highest || "none yet"));
  if (r.at_fault && (!r.focus || r.at_fault !== r.focus.stage)) parts.push("stage at fault: " + r.at_fault);
  if (r.points) parts.push("points " + r.points[0] + "/" + r.points[1]);
  return parts.join(" · ");
}

function stageItem(stage, focus) {
  const li = document.createElement("li");
  li.dataset.stage = stage.number;
  li.dataset.status = stage.status;
  if (focus && focus.stage === stage.number) li.className = "focus";
  li.append(cell("span", stage.number), cell("span", stage.title), cell("span", stage.status, {class: "status"}));
  return li;
}

function labelled(label, value, tag) {
  const el = document.createElement(tag === "pre" ? "div" : "p");
  el.append(cell("span", label, {class: "label"}));
  el.append(tag === "pre" ? cell("pre", value) : document.createTextNode(value));
  return el;
}

function failureItem(failure, lesson) {
  const li = document.createElement("li");
  li.append(cell("strong", failure.text));
  if (failure.observed) li.append(labelled("observed: ", failure.observed));
  if (failure.cause && failure.cause.trim() !== failure.observed.trim()) li.append(labelled("cause:", failure.cause, "pre"));
  if (failure.stall) li.append(labelled("the machine: ", failure.stall));
  if (failure.hint) li.append(labelled("hint: ", failure.hint));
  if (failure.reread) li.append(labelled("reread: ", lesson + ", section \u201c" + failure.reread + "\u201d"));
  return li;
}

function renderApp(app) {
  $("app-name").textContent = app.app;
  const live = $("app-live");
  live.textContent = app.running ? "a check is running…" : "";
  live.classList.toggle("running", app.running);
  const r = app.results;
  $("app-summary").textContent = summary(app);
  const stalled = $("app-stalled");
  stalled.hidden = !(r && r.machine_stalled);
  stalled.textContent = r && r.machine_stalled
    ? "The machine stalled, so some checks were not judged: " + r.machine_stalled + ". Not your code: check again." : "";
  const focus = r ? r.focus : null;
  $("app-stages").replaceChildren(...(r ? r.stages.map((s) => stageItem(s, focus)) : []));
  $("app-focus").hidden = !focus;
  if (focus) {
    $("focus-title").textContent = "Stage " + focus.stage + ": " + focus.title;
    $("focus-lesson").textContent = "The first stage that does not pass. Lesson: " + focus.lesson;
    $("focus-failures").replaceChildren(...focus.failures.map((f) => failureItem(f, focus.lesson)));
  } else if (r && r.stages.length && r.stages.every((s) => s.status === "DONE")) {
    $("app-summary").textContent += " · every stage passes";
  }
  $("app-notice").textContent = app.notice;
}

const checkNow = poll("/api/app", renderApp, () => {
  $("app-live").textContent = "the dashboard server is not answering — retrying";
}, (error) => { $("app-notice").textContent = error; });
$("check-now").addEventListener("click", () => checkNow("/api/check"));
