// The create/edit queue form: line numbers beside the config, validation against the
// server as you type (the same checks as saving: POST /queues/validate), each problem
// shown at its line, and the example config of the chosen resource.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("queue-form");
  if (!form) return;
  const config = document.getElementById("config");
  const gutter = document.getElementById("config-gutter");
  const status = document.getElementById("validation-status");
  const resource = document.getElementById("resource");
  const lists = {
    config: document.getElementById("config-problems"),
    variables: document.getElementById("variable-problems"),
    name: document.getElementById("name-problems"),
  };
  let badLines = new Set();

  const example = (r) => {
    const t = form.querySelector(`template.example[data-resource="${CSS.escape(r)}"]`);
    return t ? t.content.textContent : "";
  };

  function drawGutter() {
    const n = Math.max(1, config.value.split("\n").length);
    gutter.textContent = "";
    for (let i = 1; i <= n; i++) {
      const s = document.createElement("span");
      s.textContent = String(i);
      if (badLines.has(i)) s.className = "bad";
      gutter.appendChild(s);
      gutter.appendChild(document.createTextNode("\n"));
    }
    gutter.scrollTop = config.scrollTop;
  }
  config.addEventListener("scroll", () => { gutter.scrollTop = config.scrollTop; });

  function goToLine(line) {
    const lines = config.value.split("\n");
    let start = 0;
    for (let i = 0; i < line - 1 && i < lines.length; i++) start += lines[i].length + 1;
    config.focus();
    config.setSelectionRange(start, start + (lines[line - 1] || "").length);
  }

  function item(p) {
    const li = document.createElement("li");
    if (p.line) {
      li.dataset.line = p.line;
      const w = document.createElement("span");
      w.className = "where";
      w.textContent = `line ${p.line}` + (p.path ? `: ${p.path}` : "");
      li.appendChild(w);
      li.appendChild(document.createTextNode(" — "));
    } else if (p.path) {
      const w = document.createElement("span");
      w.className = "where";
      w.textContent = p.path;
      li.appendChild(w);
      li.appendChild(document.createTextNode(" — "));
    }
    li.appendChild(document.createTextNode(p.message));
    return li;
  }

  function show(problems) {
    for (const l of Object.values(lists)) if (l) l.textContent = "";
    badLines = new Set(problems.filter((p) => p.line).map((p) => p.line));
    for (const p of problems) {
      const l = lists[p.field] || lists.config;
      if (l) l.appendChild(item(p));
    }
    drawGutter();
    status.textContent = problems.length === 0 ? "✓ The configuration is valid." : `${problems.length} problem(s).`;
    status.className = problems.length === 0 ? "hint ok" : "hint bad";
  }

  function collect() {
    const fd = new FormData(form);
    const vars = [];
    const rows = document.querySelectorAll("#vars tbody tr");
    for (const r of rows) {
      const v = (n) => (r.querySelector(`[name="${n}"]`) || {}).value || "";
      if (!v("var_name") && !v("var_default")) continue;
      vars.push({ name: v("var_name"), type: v("var_type"), default: v("var_default"), min: v("var_min"), max: v("var_max"), enum: v("var_enum"), description: v("var_description") });
    }
    const body = {
      entity: fd.get("entity") || "",
      name: fd.get("name") || (document.getElementById("name") || {}).value || "",
      resource: fd.get("resource") || (resource || {}).value || "",
      config: config.value,
      description: fd.get("description") || "",
      prioritize: fd.get("prioritize") === "true",
      vars,
    };
    if (form.dataset.editing) body.editing = form.dataset.editing;
    return body;
  }

  let timer = null;
  let seq = 0;
  async function validate() {
    const mine = ++seq;
    status.textContent = "Checking…";
    try {
      const res = await hoist.post(form.dataset.validate, collect());
      if (mine !== seq) return;
      if (!res.ok) {
        status.textContent = res.status === 403 ? "Your session changed: reload the page." : `Could not check (HTTP ${res.status}).`;
        return;
      }
      const answer = await res.json();
      if (mine === seq) show(answer.problems || []);
    } catch (e) {
      if (mine === seq) status.textContent = "Could not reach the server to check.";
    }
  }
  const later = () => { clearTimeout(timer); timer = setTimeout(validate, 350); };
  form.addEventListener("input", (e) => { if (e.target === config) drawGutter(); later(); });
  form.addEventListener("change", later);

  for (const l of Object.values(lists)) {
    if (l) l.addEventListener("click", (e) => {
      const li = e.target.closest("li[data-line]");
      if (li && li.dataset.line) goToLine(Number(li.dataset.line));
    });
  }

  // The example config: prefilled for a new queue; swapped when the resource changes
  // while the config is still an untouched example.
  const isExample = () => Array.from(form.querySelectorAll("template.example")).some((t) => example(t.dataset.resource) === config.value);
  if (resource && !resource.disabled) {
    resource.addEventListener("change", () => {
      if (isExample() || config.value.trim() === "") {
        config.value = example(resource.value);
        drawGutter();
      }
    });
  }
  const useExample = document.getElementById("use-example");
  if (useExample) useExample.addEventListener("click", () => {
    if (config.value.trim() && !isExample() && !window.confirm("Replace the configuration with the example?")) return;
    config.value = example(resource ? resource.value : "");
    drawGutter();
    later();
  });

  // Tab indents instead of leaving the editor (Escape then Tab leaves it).
  let escaped = false;
  config.addEventListener("keydown", (e) => {
    if (e.key === "Escape") { escaped = true; return; }
    if (e.key === "Tab" && !e.shiftKey && !escaped) {
      e.preventDefault();
      const s = config.selectionStart;
      config.setRangeText("  ", s, config.selectionEnd, "end");
      drawGutter();
      later();
    }
    escaped = false;
  });
  drawGutter();
});
