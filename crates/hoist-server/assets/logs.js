// hoist web UI: a run's log (#log on /runs/{id}), live. Progressive enhancement of
// the server-rendered tail: follows new lines over server-sent events
// (/runs/{id}/log/events), loads earlier pages (/runs/{id}/log/page?before=N) and
// searches the lines loaded in the page. Log text only ever becomes text nodes.
"use strict";

(() => {
  // Lines kept in the page while following; older ones are dropped (and can be
  // loaded again) while the reader is at the bottom.
  const MAX_LINES = 20000;

  const log = document.getElementById("log");
  if (!log) return;
  let first = Number(log.dataset.first) || 0; // offset of the first line shown
  let next = Number(log.dataset.next) || 0; // offset after the last line shown
  const status = document.getElementById("log-status");
  const earlier = document.getElementById("load-earlier");
  const start = document.getElementById("log-start");
  const jump = document.getElementById("log-jump");
  const search = document.getElementById("log-search");
  const onlyHits = document.getElementById("log-filter");
  const count = document.getElementById("log-search-count");
  const box = document.getElementById("log-search-box");
  if (box) box.hidden = false;

  const setStatus = (t) => { if (status) status.textContent = t; };
  const atBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 32;
  const toBottom = () => { log.scrollTop = log.scrollHeight; };
  const lines = log.getElementsByClassName("log-line"); // live

  // ---- search (over the loaded lines) -------------------------------------------
  let query = "";
  let cursor = -1; // the hit Enter moved to last

  // A line's text, without its number.
  function textOf(el) {
    let t = "";
    for (let n = el.firstChild ? el.firstChild.nextSibling : null; n; n = n.nextSibling) {
      t += n.textContent;
    }
    return t;
  }

  // Marks the query's matches in a line (as <mark> elements around text nodes);
  // returns whether it matched.
  function apply(el) {
    const marked = el.childNodes.length > 2 || el.classList.contains("hit");
    if (!query && !marked) {
      el.hidden = false;
      return false;
    }
    const text = textOf(el);
    while (el.childNodes.length > 1) el.removeChild(el.lastChild);
    let hit = false;
    if (query) {
      const lower = text.toLowerCase();
      // Case-insensitive unless lowercasing changed the length (offsets would shift).
      const hay = lower.length === text.length ? lower : text;
      const needle = lower.length === text.length ? query.toLowerCase() : query;
      let at = 0;
      let i = hay.indexOf(needle);
      while (i >= 0 && needle.length > 0) {
        hit = true;
        if (i > at) el.appendChild(document.createTextNode(text.slice(at, i)));
        const m = document.createElement("mark");
        m.textContent = text.slice(i, i + needle.length);
        el.appendChild(m);
        at = i + needle.length;
        i = hay.indexOf(needle, at);
      }
      if (at < text.length) el.appendChild(document.createTextNode(text.slice(at)));
    } else {
      el.appendChild(document.createTextNode(text));
    }
    el.classList.toggle("hit", hit);
    el.hidden = Boolean(query && onlyHits && onlyHits.checked && !hit);
    return hit;
  }

  function updateCount() {
    if (!count) return;
    if (!query) {
      count.textContent = "";
      return;
    }
    const n = log.getElementsByClassName("hit").length;
    count.textContent = n === 1 ? "1 matching line" : n + " matching lines";
  }

  function searchAll() {
    const stick = atBottom();
    query = search ? search.value : "";
    cursor = -1;
    for (const el of lines) apply(el);
    updateCount();
    if (stick) toBottom();
  }

  if (search) {
    let timer = 0;
    search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(searchAll, 150);
    });
    search.addEventListener("keydown", (e) => {
      if (e.key === "Escape") {
        search.value = "";
        searchAll();
      } else if (e.key === "Enter") {
        e.preventDefault();
        searchAll();
        const hits = log.getElementsByClassName("hit");
        if (!hits.length) return;
        // Enter: the next match down; Shift+Enter: the one before.
        cursor = e.shiftKey ? (cursor <= 0 ? hits.length - 1 : cursor - 1) : (cursor + 1) % hits.length;
        hits[cursor].scrollIntoView({ block: "center" });
      }
    });
  }
  if (onlyHits) onlyHits.addEventListener("change", searchAll);

  // ---- lines -----------------------------------------------------------------------
  const streamClass = { stderr: " stderr", system: " system" };

  function lineEl(l) {
    const d = document.createElement("div");
    d.className = "line log-line" + (streamClass[l.stream] || " stdout");
    d.dataset.o = String(l.offset);
    const n = document.createElement("span");
    n.className = "n";
    n.textContent = String(l.offset + 1);
    d.appendChild(n);
    d.appendChild(document.createTextNode(String(l.text)));
    if (query) apply(d);
    return d;
  }

  function showEarlier() {
    if (earlier) {
      earlier.hidden = first <= 0;
      earlier.href = earlier.href.replace(/before=\d+/, "before=" + first);
    }
    if (start) start.hidden = first > 0;
  }

  // Drops the oldest lines beyond MAX_LINES (they can be loaded again).
  function trim() {
    let extra = lines.length - MAX_LINES;
    if (extra <= 0) return;
    while (extra-- > 0) log.removeChild(lines[0]);
    first = Number(lines[0].dataset.o);
    showEarlier();
  }

  // Live lines arrive in bursts: added together, a few times a second at most.
  let pending = [];
  let timer = 0;
  function flush() {
    timer = 0;
    const stick = atBottom();
    const frag = document.createDocumentFragment();
    for (const l of pending) frag.appendChild(lineEl(l));
    pending = [];
    log.appendChild(frag);
    const empty = document.getElementById("log-empty");
    if (empty) empty.remove();
    if (stick) {
      trim();
      toBottom();
    } else if (jump) {
      jump.hidden = false;
    }
    updateCount();
  }
  function add(l) {
    pending.push(l);
    if (!timer) timer = setTimeout(flush, 40);
  }

  if (jump) {
    jump.addEventListener("click", () => {
      toBottom();
      jump.hidden = true;
    });
    log.addEventListener("scroll", () => {
      if (atBottom()) jump.hidden = true;
    });
  }

  // ---- earlier pages -----------------------------------------------------------
  let loading = false;
  async function loadEarlier(e) {
    e.preventDefault();
    if (first <= 0 || loading) return;
    loading = true;
    earlier.setAttribute("aria-busy", "true");
    try {
      const r = await fetch(log.dataset.page + "?before=" + first, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (!r.ok) throw new Error("the server answered " + r.status);
      const page = await r.json();
      const frag = document.createDocumentFragment();
      let top = first;
      for (const l of page.lines) {
        if (l.offset < first) {
          frag.appendChild(lineEl(l));
          top = Math.min(top, l.offset);
        }
      }
      // Nothing before `first`: the log starts there (its early lines are gone).
      if (top === first) top = 0;
      const height = log.scrollHeight;
      log.insertBefore(frag, lines[0] || null);
      log.scrollTop += log.scrollHeight - height; // keep what the reader was looking at
      first = top;
      showEarlier();
      updateCount();
    } catch (err) {
      setStatus("could not load earlier lines: " + err.message);
    } finally {
      loading = false;
      earlier.removeAttribute("aria-busy");
    }
  }
  if (earlier) earlier.addEventListener("click", loadEarlier);

  // ---- following -----------------------------------------------------------------
  // The state badge and which of Stop / Cancel applies, as the server tells it.
  function showState(d) {
    const badge = document.getElementById("run-state");
    if (badge && d.state) {
      badge.textContent = d.state;
      badge.className = "badge " + (d.class || "");
      badge.dataset.state = d.state;
    }
    const stop = document.getElementById("stop-form");
    const cancel = document.getElementById("cancel-form");
    if (stop) stop.hidden = !["building", "starting", "running", "unknown"].includes(d.state);
    if (cancel) cancel.hidden = !["queued", "claimed"].includes(d.state);
  }

  function ended(d) {
    setStatus(d.state ? "run " + d.state + "; log complete" : "log complete");
    const badge = document.getElementById("run-state");
    if (badge && d.state) {
      badge.textContent = d.state;
      badge.className = "badge " + (d.class || "");
      badge.dataset.state = d.state;
    }
    for (const id of ["stop-run", "cancel-run"]) {
      const b = document.getElementById(id);
      if (b) b.disabled = true;
    }
  }

  function follow() {
    if (log.dataset.live !== "1" || !window.EventSource) return;
    // A dropped connection is resumed by the browser, from the last line's id.
    const es = new EventSource(log.dataset.events + "?offset=" + next);
    es.onopen = () => setStatus("following");
    es.onmessage = (e) => {
      let l;
      try {
        l = JSON.parse(e.data);
      } catch (_) {
        return;
      }
      if (typeof l.offset !== "number" || l.offset < next) return;
      next = l.offset + 1;
      add(l);
    };
    es.addEventListener("state", (e) => {
      try {
        showState(JSON.parse(e.data));
      } catch (_) { /* a state without details */ }
    });
    es.addEventListener("end", (e) => {
      es.close();
      let d = {};
      try {
        d = JSON.parse(e.data);
      } catch (_) { /* an end without details */ }
      if (timer) {
        clearTimeout(timer);
        flush();
      }
      ended(d);
    });
    es.onerror = () => {
      setStatus(es.readyState === EventSource.CLOSED
        ? "live updates stopped; reload the page to resume"
        : "reconnecting…");
    };
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (log.dataset.tail === "1") toBottom();
    showEarlier();
    follow();
  });
})();
