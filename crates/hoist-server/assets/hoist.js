// hoist web UI: progressive enhancement only; every page works without it.
// No inline script anywhere (the Content-Security-Policy forbids it): behaviour is
// attached here by data attributes.
"use strict";

const hoist = {
  csrf() {
    const m = document.getElementById("main");
    return m ? m.dataset.csrf || "" : "";
  },
  // fetch with the session's CSRF token on state-changing requests
  async post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": hoist.csrf() },
      body: JSON.stringify(body),
    });
  },
  // times in the browser's own zone
  localTimes(root) {
    const fmt = new Intl.DateTimeFormat(undefined, {
      year: "numeric", month: "short", day: "numeric",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
    for (const t of (root || document).querySelectorAll("time[datetime]:not([data-done])")) {
      const d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) {
        t.title = t.textContent;
        t.textContent = fmt.format(d);
        t.dataset.done = "1";
      }
    }
  },
};
window.hoist = hoist;

document.addEventListener("DOMContentLoaded", () => {
  hoist.localTimes();
  // <form data-confirm="Stop this run?">: asks before sending
  for (const f of document.querySelectorAll("form[data-confirm]")) {
    f.addEventListener("submit", (e) => {
      if (!window.confirm(f.dataset.confirm)) e.preventDefault();
    });
  }
  // <select data-autosubmit>: filters apply on change
  for (const s of document.querySelectorAll("select[data-autosubmit]")) {
    s.addEventListener("change", () => s.form && s.form.submit());
  }
});
