// hoist web UI: the launch form and drawer (jobs pages, /launch).
// Progressive enhancement only: without this script the Launch buttons are links to
// /launch, a "Show the chosen queue's variables" button re-renders the form for
// another queue, and the server checks everything.
"use strict";

(function () {
  // The chosen queue's template-variable fields: the server renders the selected
  // queue's live and every queue's in a <template data-queue>; on a change the live
  // fields are kept aside (with what was typed) and the new queue's are shown.
  function setupQueueSwitch(form) {
    const queue = form.querySelector("#launch-queue");
    const live = form.querySelector("#launch-vars");
    if (!queue || !live) return;
    const kept = new Map();
    let current = queue.value;
    queue.addEventListener("change", () => {
      const away = document.createDocumentFragment();
      while (live.firstChild) away.appendChild(live.firstChild);
      kept.set(current, away);
      current = queue.value;
      let next = kept.get(current);
      kept.delete(current);
      if (!next) {
        const tpl = Array.from(form.querySelectorAll("template.launch-vars-tpl"))
          .find((t) => t.dataset.queue === current);
        next = tpl ? tpl.content.cloneNode(true) : document.createDocumentFragment();
      }
      live.appendChild(next);
    });
  }

  // The run config must be a JSON object: said while typing, and the browser will
  // not send the form until it is.
  function setupConfigCheck(form) {
    const cfg = form.querySelector("#launch-config");
    const out = form.querySelector("#launch-config-error");
    if (!cfg) return;
    cfg.addEventListener("input", () => {
      let msg = "";
      const text = cfg.value.trim();
      if (text) {
        try {
          const v = JSON.parse(text);
          if (v === null || typeof v !== "object" || Array.isArray(v)) {
            msg = 'the run config must be a JSON object, such as {"lr": 0.01}';
          }
        } catch (e) {
          msg = "the run config is not valid JSON: " + e.message;
        }
      }
      cfg.setCustomValidity(msg);
      cfg.setAttribute("aria-invalid", msg ? "true" : "false");
      if (out) {
        out.textContent = msg;
        out.hidden = !msg;
      }
    });
  }

  function setupForm(form) {
    for (const el of form.querySelectorAll("[data-js-hide]")) el.hidden = true;
    setupQueueSwitch(form);
    setupConfigCheck(form);
    // One launch per click: the button is disabled once the form is on its way.
    form.addEventListener("submit", () => {
      const b = form.querySelector("#launch-submit");
      if (b) window.setTimeout(() => { b.disabled = true; }, 0);
    });
  }

  // The drawer: each job's Launch button (data-job, data-versions, data-version)
  // fills the drawer's job and version and opens it.
  function setupDrawer() {
    const dlg = document.getElementById("launch-drawer");
    if (!dlg || typeof dlg.showModal !== "function") return;
    const job = dlg.querySelector("#launch-job");
    const label = dlg.querySelector("#launch-job-label");
    const version = dlg.querySelector("#launch-version");
    for (const b of document.querySelectorAll("a.launch-open[data-job]")) {
      b.addEventListener("click", (e) => {
        // A new tab or window gets the form as a page.
        if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
        e.preventDefault();
        if (job) job.value = b.dataset.job;
        if (label) label.textContent = b.dataset.job;
        if (version) {
          const versions = (b.dataset.versions || "").split(/\s+/).filter(Boolean);
          version.replaceChildren(
            new Option(versions.length ? "latest (" + versions[0] + ")" : "latest", "latest"),
            ...versions.map((v) => new Option(v, v)),
          );
          version.value = b.dataset.version || "latest";
        }
        const submit = dlg.querySelector("#launch-submit");
        if (submit && dlg.querySelector("#launch-queue")) submit.disabled = false;
        dlg.showModal();
        const first = dlg.querySelector("#launch-queue") || version;
        if (first) first.focus();
      });
    }
    const close = dlg.querySelector("#launch-close");
    if (close) close.addEventListener("click", () => dlg.close());
    // A click on the backdrop (outside the drawer's box) closes it.
    dlg.addEventListener("click", (e) => {
      const r = dlg.getBoundingClientRect();
      const inside = e.clientX >= r.left && e.clientX <= r.right &&
        e.clientY >= r.top && e.clientY <= r.bottom;
      if (!inside && e.target === dlg) dlg.close();
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const f of document.querySelectorAll("form.launch-form")) setupForm(f);
    setupDrawer();
  });
})();
