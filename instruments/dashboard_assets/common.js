"use strict";
// What the dashboard's two views share: the page's elements, and a view polled every second.
const $ = (id) => document.getElementById(id);

function cell(tag, text, attrs) {
  const el = document.createElement(tag);
  el.textContent = text;
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
}

// Poll URL every second and RENDER its answer (DOWN when the server does not answer); the
// function returned posts a button's action and renders its answer (NOTICE shows a refusal).
// A poll that started before a press never overwrites the press's answer.
function poll(url, render, down, notice) {
  let actions = 0;
  async function refresh() {
    const before = actions;
    try {
      const answer = await fetch(url, {cache: "no-store"});
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      const data = await answer.json();
      if (before === actions) render(data);
    } catch (err) {
      down();
    }
  }
  refresh();
  setInterval(refresh, 1000);
  return async function act(path, body) {
    actions += 1;
    const answer = await fetch(path, {method: "POST", headers: {"X-Dashboard": "1"}, body: body || ""});
    const data = await answer.json();
    if (answer.ok) render(data); else notice(data.error);
  };
}
