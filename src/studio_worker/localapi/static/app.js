// studio-worker dashboard: token hand-over, the JSON API client, polling and tabs.
//
// The token arrives once in the URL fragment (#token=…, opened by the tray or the CLI),
// moves to sessionStorage (this tab only, gone when it closes) and leaves the address bar.
// Every API call sends it as a bearer token; the page itself is served without one.

import { ConfigForm, WindowCard } from "./config.js";
import {
  activity, h, logLine, overall, renderAbout, renderCurrentJob, renderJobDetail,
  renderJobTable, renderModels, renderStatus,
} from "./views.js";

const TOKEN_KEY = "studio-worker.token";
// A copy of ui.toml's window preferences, so the first paint already has the right theme;
// the daemon's GET /ui/prefs is what counts.
const PREFS_KEY = "studio-worker.prefs";
const DEFAULT_PREFS = { theme: "dark", reduceMotion: false, notifyOnCompletion: false, notifyOnFailure: false };
const PREFS_POLL_TICKS = 5;
const TABS = ["status", "jobs", "models", "config", "logs", "about"];
const POLL_MS = 1000;
const HIDDEN_POLL_MS = 5000;
const LOG_CAP = 500;

const $ = (id) => document.getElementById(id);

class ApiFailure extends Error {
  constructor(status, body) {
    super(typeof body === "object" && body?.message ? body.message : `HTTP ${status}: ${typeof body === "string" ? body : ""}`);
    this.status = status;
    this.body = body;
  }
}

const app = {
  token: null,
  link: "connecting",
  status: null,
  logs: [],
  logsSeq: 0,
  models: null,
  pulls: null,
  about: null,
  update: null,
  selectedJob: null,
  jobLog: null,
  tab: "status",
  tick: 0,
  rendered: {},
  config: null,
  prefs: { ...DEFAULT_PREFS },
  prefsLoaded: false,
  prefsVersion: 0, // bumped by each local change: an older GET answer does not undo it
  windowCard: null,
};

// ---- token -------------------------------------------------------------------------------

function takeTokenFromUrl() {
  const hash = location.hash.replace(/^#/, "");
  const params = new URLSearchParams(hash);
  const token = params.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    const tab = params.get("tab");
    history.replaceState(null, "", `${location.pathname}${location.search}#${TABS.includes(tab) ? tab : "status"}`);
  }
  app.token = sessionStorage.getItem(TOKEN_KEY);
}

function showGate(why) {
  $("gate").hidden = false;
  if (why) $("gate-why").textContent = why;
  for (const tab of TABS) $(`panel-${tab}`).hidden = true;
  $("unreachable").hidden = true;
}

// ---- API ---------------------------------------------------------------------------------

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${app.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  const type = res.headers.get("content-type") || "";
  const data = type.includes("json") ? await res.json() : await res.text();
  if (res.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    app.token = null;
    showGate("The worker refused this page's token: it restarts with a new one each time. Open the dashboard from the tray again.");
  }
  if (!res.ok) throw new ApiFailure(res.status, data);
  return data;
}

function say(text, bad = false) {
  const el = $("footer-right");
  el.textContent = `${new Date().toLocaleTimeString([], { hour12: false })} ${text}`;
  el.classList.toggle("bad", bad);
}

async function act(label, fn) {
  try {
    const out = await fn();
    await poll();
    return out;
  } catch (err) {
    say(`${label} failed: ${err.message}`, true);
    return null;
  }
}

const actions = {
  togglePause: () => {
    const pausing = !app.status?.paused;
    return act(pausing ? "Pause" : "Resume", async () => {
      const answer = await api("POST", pausing ? "/daemon/pause" : "/daemon/resume");
      say(answer.paused ? "Paused: studio offers are declined" : "Resumed: taking studio jobs");
    });
  },
  resetRegistration: () => act("Reset registration", async () => {
    await api("POST", "/daemon/registration/reset");
    say("Registration reset: a new request goes to the studio");
  }),
  deleteModel: (model) => {
    const loaded = model.resident ? ` It is loaded: the ${model.residentIn} engine process stops first.` : "";
    if (!confirm(`Delete ${model.id} (${model.files.length} files) from the model cache?${loaded}`)) return null;
    return act("Delete", async () => {
      const answer = await api("DELETE", `/models/${encodeURIComponent(model.engine)}/${encodeURIComponent(model.model)}`);
      say(`Deleted ${model.id}, ${Math.round(answer.freedBytes / 1e6)} MB freed`);
      app.models = await api("GET", "/models");
    });
  },
  loadModel: (model) => act("Load", async () => {
    say(`Loading ${model.id}…`);
    const answer = await api("POST", "/models/load", { engine: model.engine, model: model.model });
    say(`Loaded ${answer.id} in the ${answer.engine} engine (process ${answer.pid})`);
    app.models = await api("GET", "/models");
  }),
  unloadEngine: (engine) => act("Unload", async () => {
    const answer = await api("POST", "/models/unload", { engine: engine.name });
    say(answer.stopped
      ? `Unloaded: the ${answer.engine} engine process ${answer.pid} stopped and freed its memory`
      : `The ${answer.engine} engine was not running: nothing to unload`);
    app.models = await api("GET", "/models");
  }),
  checkUpdates: async () => {
    const button = document.querySelector("[data-testid=check-updates]");
    if (button) { button.disabled = true; button.textContent = "Checking…"; }
    try {
      app.update = await api("POST", "/daemon/update/check");
    } catch (err) {
      app.update = err.status === 404
        ? { error: "This daemon cannot check for updates from the dashboard (no update route). Use `studio-worker check-update`." }
        : { error: `Update check failed: ${err.message}` };
    }
    app.rendered.about = null;
    render();
  },
  copy: async (text) => {
    try {
      await navigator.clipboard.writeText(text);
      say("Copied");
    } catch {
      say("Copy is not allowed here; select the text instead", true);
    }
  },
};

// ---- polling -----------------------------------------------------------------------------

async function poll() {
  if (!app.token) return;
  try {
    app.status = await api("GET", "/daemon/status");
    app.link = "connected";
    const logs = await api("GET", `/daemon/logs?after=${app.logsSeq}`);
    if (logs.seq < app.logsSeq) app.logs = []; // the daemon restarted: the ring starts over
    app.logs.push(...logs.entries);
    if (app.logs.length > LOG_CAP) app.logs.splice(0, app.logs.length - LOG_CAP);
    app.logsNew = logs.entries;
    app.logsSeq = logs.seq;
    if (app.tab === "models" && (app.tick % 2 === 0 || !app.models)) {
      [app.models, app.pulls] = await Promise.all([api("GET", "/models"), api("GET", "/models/pulls")]);
    }
    if (app.tab === "jobs" && app.selectedJob) {
      app.jobLog = await api("GET", `/jobs/${encodeURIComponent(app.selectedJob)}/log`).catch(() => null);
    }
    if (app.tab === "about" && (!app.about || app.tick % 10 === 0)) app.about = await api("GET", "/daemon/about");
    if (!app.prefsLoaded || app.tick % PREFS_POLL_TICKS === 0) await loadPrefs();
  } catch (err) {
    if (!app.token) return;
    app.link = err instanceof ApiFailure ? "error" : "unreachable";
  }
  app.tick += 1;
  render();
}

function schedule() {
  setTimeout(async () => {
    await poll();
    schedule();
  }, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
}

// ---- rendering ---------------------------------------------------------------------------

// While a mouse button or finger is down nothing is rebuilt: a click whose button was
// replaced between press and release would be lost, and so would a text selection.
let pointerHeld = false;
document.addEventListener("pointerdown", () => { pointerHeld = true; }, true);
document.addEventListener("pointerup", () => setTimeout(() => { pointerHeld = false; }, 0), true);
document.addEventListener("pointercancel", () => { pointerHeld = false; }, true);

function once(tab, key, build) {
  // Rebuild a panel only when what it shows changed, so clicks and scrolling survive polls.
  if (pointerHeld) return;
  const stamp = JSON.stringify(key);
  if (app.rendered[tab] === stamp) return;
  app.rendered[tab] = stamp;
  build();
}

function renderHeader() {
  const state = overall(app.status, app.link);
  const pillEl = $("state-pill");
  pillEl.textContent = state.text;
  pillEl.dataset.tone = state.tone;
  $("activity").textContent = app.link === "connected" ? activity(app.status) : "";
  const toggle = $("pause-toggle");
  toggle.disabled = app.link !== "connected";
  toggle.textContent = app.status?.paused ? "Resume" : "Pause";
  toggle.classList.toggle("primary", Boolean(app.status?.paused));
  $("unreachable").hidden = app.link !== "unreachable" || !app.token;
  if (app.status) $("footer-left").textContent = `daemon ${app.status.version} · ${app.status.localApiUrl || ""}`;
  const busy = app.status?.busy;
  document.title = `${state.text}${busy ? " · " + app.status.currentJob?.kind : ""} — studio-worker`;
}

function selectJob(id) {
  app.selectedJob = app.selectedJob === id ? null : id;
  app.jobLog = null;
  app.rendered.jobs = null;
  render();
  if (app.selectedJob) poll();
}

function allJobs() {
  const s = app.status;
  if (!s) return [];
  return [...(s.currentJob ? [s.currentJob] : []), ...s.recentJobs];
}

function renderPanel() {
  const panel = $(`panel-${app.tab}`);
  const s = app.status;
  if (!s) return;
  switch (app.tab) {
    case "status":
      // ages ("3 s ago") change every second: key on the second
      once("status", [s, Math.floor(Date.now() / 1000)], () => panel.replaceChildren(...renderStatus(s, actions)));
      break;
    case "jobs": {
      const jobs = allJobs();
      const selected = jobs.find((j) => j.jobId === app.selectedJob);
      once("jobs", [s.currentJob, s.recentJobs, s.downloads, app.selectedJob, app.jobLog], () => {
        const scroller = panel.querySelector("[data-testid=job-log]");
        const atBottom = !scroller || scroller.scrollTop + scroller.clientHeight >= scroller.scrollHeight - 4;
        panel.replaceChildren(
          renderCurrentJob(s.currentJob, s.downloads),
          h("div", { class: "split" },
            h("section", { class: "card" }, h("h2", {}, `History (${s.recentJobs.length} of the last 50)`), h("div", { class: "table-wrap" }, renderJobTable(s.recentJobs, app.selectedJob, selectJob))),
            h("section", { class: "card", "data-testid": "job-detail" }, h("h2", {}, "Details"), renderJobDetail(selected, app.jobLog)),
          ),
        );
        const log = panel.querySelector("[data-testid=job-log]");
        if (log && atBottom) log.scrollTop = log.scrollHeight;
      });
      break;
    }
    case "models":
      once("models", [app.models, app.pulls, s.downloads, s.currentJob?.jobId, s.gateHolder], () => {
        // the pull form is built once, so what the operator types survives the updates
        if (!app.pullForm) app.pullForm = pullForm();
        const live = panel.querySelector(".models-live") || h("div", { class: "models-live stack" });
        live.replaceChildren(...renderModels(app.models, app.pulls, s, actions));
        if (!live.isConnected) panel.replaceChildren(live, app.pullForm);
      });
      break;
    case "config":
      if (!app.config) {
        app.windowCard = new WindowCard(setPref);
        app.config = new ConfigForm(panel, api, say, app.windowCard.el);
        app.windowCard.update(app.prefs);
      }
      app.config.update(s.config);
      break;
    case "logs":
      renderLogs(panel);
      break;
    case "about":
      once("about", [app.about, app.update], () => panel.replaceChildren(...renderAbout(app.about, app.update, actions)));
      break;
  }
}

function render() {
  renderHeader();
  if (!app.token) return;
  $("gate").hidden = true;
  for (const tab of TABS) {
    const on = tab === app.tab;
    $(`panel-${tab}`).hidden = !on;
    const button = $(`tab-${tab}`);
    button.setAttribute("aria-selected", on ? "true" : "false");
    button.tabIndex = on ? 0 : -1;
  }
  renderPanel();
}

// ---- Logs tab: built once, lines appended ------------------------------------------------

const logsUi = { built: false, shown: 0 };

function logMatches(entry) {
  const level = logsUi.level.value;
  const rank = { debug: 0, info: 1, warn: 2, error: 3 };
  if (level !== "all" && rank[entry.level] < rank[level]) return false;
  const q = logsUi.search.value.trim().toLowerCase();
  if (!q) return true;
  return [entry.message, entry.target, entry.jobId || ""].some((t) => t.toLowerCase().includes(q));
}

function renderLogs(panel) {
  if (!logsUi.built) {
    logsUi.level = h("select", { "aria-label": "Lowest level shown", "data-testid": "log-level" },
      h("option", { value: "all" }, "All levels"), h("option", { value: "info" }, "Info and up"),
      h("option", { value: "warn" }, "Warnings and errors"), h("option", { value: "error" }, "Errors"));
    logsUi.search = h("input", { type: "search", placeholder: "Search message, category or job id", "aria-label": "Search the log", "data-testid": "log-search" });
    logsUi.follow = h("input", { type: "checkbox", id: "log-follow", checked: true, class: "switch" });
    logsUi.count = h("span", { class: "hint", "data-testid": "log-count" });
    logsUi.view = h("div", { class: "logview", role: "log", "aria-label": "Worker log", tabindex: 0, "data-testid": "log-view" });
    const refilter = () => { logsUi.shown = -1; renderLogs(panel); };
    logsUi.level.addEventListener("change", refilter);
    logsUi.search.addEventListener("input", refilter);
    logsUi.view.addEventListener("scroll", () => {
      // scrolling up to read stops auto-scroll (our own scrolls always land at the bottom)
      const v = logsUi.view;
      if (v.scrollTop + v.clientHeight < v.scrollHeight - 4) logsUi.follow.checked = false;
    });
    panel.replaceChildren(
      h("div", { class: "toolbar" }, logsUi.level, logsUi.search,
        h("label", { for: "log-follow" }, logsUi.follow, " Auto-scroll"),
        h("button", { class: "btn small", type: "button", onclick: () => actions.copy(app.logs.filter(logMatches).map((e) => `${e.ts} ${e.level} ${e.target}: ${e.message}`).join("\n")) }, "Copy"),
        logsUi.count),
      logsUi.view,
    );
    logsUi.built = true;
    logsUi.shown = -1;
  }
  if (logsUi.shown === -1 || logsUi.lastSeq === undefined || app.logs.length === 0) {
    const lines = app.logs.filter(logMatches).map((e) => logLine(e));
    logsUi.view.replaceChildren(...(lines.length ? lines : [h("p", { class: "empty", style: "padding:0 0.75rem" }, "No log lines match.")]));
    logsUi.shown = 0;
  } else {
    const fresh = app.logs.filter((e) => e.seq > logsUi.lastSeq && logMatches(e));
    if (fresh.length) {
      logsUi.view.querySelector(".empty")?.remove();
      logsUi.view.append(...fresh.map((e) => logLine(e)));
      while (logsUi.view.childElementCount > LOG_CAP) logsUi.view.firstElementChild.remove();
    }
  }
  logsUi.lastSeq = app.logsSeq;
  logsUi.count.textContent = `${app.logs.filter(logMatches).length} of the last ${app.logs.length} lines`;
  if (logsUi.follow.checked) logsUi.view.scrollTop = logsUi.view.scrollHeight;
}

// ---- Models tab: pull form ---------------------------------------------------------------

function pullForm() {
  const model = h("input", { type: "text", id: "pull-model", required: true, placeholder: "qwen3.5-2b" });
  const engine = h("input", { type: "text", id: "pull-engine", required: true, placeholder: "llama-cpp" });
  const url = h("input", { type: "url", id: "pull-url", required: true, placeholder: "https://…/model.gguf" });
  const sha = h("input", { type: "text", id: "pull-sha", placeholder: "optional", spellcheck: "false" });
  const submit = async (e) => {
    e.preventDefault();
    const filename = decodeURIComponent(new URL(url.value, location.href).pathname.split("/").pop() || "");
    await act("Pull", async () => {
      const answer = await api("POST", "/models/pull", {
        model: model.value.trim(),
        source: { engine: engine.value.trim(), files: [{ role: "model", url: url.value.trim(), filename, sha256: sha.value.trim() || null }] },
      });
      say(`Pulling ${answer.id}`);
      [app.models, app.pulls] = await Promise.all([api("GET", "/models"), api("GET", "/models/pulls")]);
    });
  };
  const row = (label, input) => h("div", { class: "field" }, h("label", { for: input.id }, label), h("div", { class: "control" }, input));
  return h("section", { class: "card" },
    h("h2", {}, "Pull a model"),
    h("form", { onsubmit: submit },
      row("Model name", model), row("Engine", engine), row("File URL", url), row("sha256", sha),
      h("p", {}, h("button", { class: "btn primary", type: "submit" }, "Pull")),
    ),
  );
}

// ---- tabs, start -------------------------------------------------------------------------

function selectTab(tab, focus = false) {
  if (!TABS.includes(tab)) tab = "status";
  app.tab = tab;
  if (location.hash !== `#${tab}`) history.replaceState(null, "", `#${tab}`);
  app.rendered[tab] = null;
  render();
  if (focus) $(`tab-${tab}`).focus();
  poll();
}

function setupTabs() {
  for (const tab of TABS) $(`tab-${tab}`).addEventListener("click", () => selectTab(tab));
  document.querySelector(".tabs").addEventListener("keydown", (e) => {
    const i = TABS.indexOf(app.tab);
    if (e.key === "ArrowRight") selectTab(TABS[(i + 1) % TABS.length], true);
    else if (e.key === "ArrowLeft") selectTab(TABS[(i + TABS.length - 1) % TABS.length], true);
    else if (e.key === "Home") selectTab(TABS[0], true);
    else if (e.key === "End") selectTab(TABS[TABS.length - 1], true);
  });
  window.addEventListener("hashchange", () => {
    if (location.hash.includes("token=")) { takeTokenFromUrl(); poll(); }
    selectTab(location.hash.replace(/^#/, ""));
  });
}

// ---- window preferences (ui.toml): theme, reduce motion, notifications ------------------

function applyPrefs() {
  const p = app.prefs;
  const root = document.documentElement;
  if (p.theme === "system") root.removeAttribute("data-theme");
  else root.dataset.theme = p.theme;
  root.toggleAttribute("data-reduce-motion", Boolean(p.reduceMotion));
  $("theme").value = p.theme;
  app.windowCard?.update(p);
  localStorage.setItem(PREFS_KEY, JSON.stringify(p));
}

async function loadPrefs() {
  const version = app.prefsVersion;
  let prefs;
  try {
    prefs = await api("GET", "/ui/prefs");
  } catch {
    return; // an older daemon without the route: the local copy stands
  }
  if (version !== app.prefsVersion) return; // changed here meanwhile: that answer is stale
  app.prefs = prefs;
  app.prefsLoaded = true;
  applyPrefs();
}

// Applied at once, then stored in ui.toml; a refusal puts the previous value back.
async function setPref(key, value) {
  const before = app.prefs;
  app.prefsVersion += 1;
  app.prefs = { ...before, [key]: value };
  applyPrefs();
  if (!app.token) return;
  try {
    const answer = await api("PUT", "/ui/prefs", { [key]: value });
    app.prefsVersion += 1;
    app.prefs = answer.prefs;
    applyPrefs();
    say(answer.changed.length ? `Saved: ${answer.changed.join(", ")}` : "Saved (nothing changed)");
  } catch (err) {
    app.prefsVersion += 1;
    app.prefs = before;
    applyPrefs();
    say(`Not saved: ${err.message}`, true);
  }
}

function setupPrefs() {
  try {
    app.prefs = { ...DEFAULT_PREFS, ...JSON.parse(localStorage.getItem(PREFS_KEY) || "{}") };
  } catch {
    app.prefs = { ...DEFAULT_PREFS };
  }
  applyPrefs();
  const select = $("theme");
  select.addEventListener("change", () => setPref("theme", select.value));
}

function start() {
  takeTokenFromUrl();
  setupPrefs();
  setupTabs();
  $("pause-toggle").addEventListener("click", actions.togglePause);
  $("gate-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("gate-token").value.trim());
    app.token = sessionStorage.getItem(TOKEN_KEY);
    $("gate-token").value = "";
    poll();
  });
  if (!app.token) showGate();
  app.tab = TABS.includes(location.hash.replace(/^#/, "")) ? location.hash.replace(/^#/, "") : "status";
  render();
  poll().then(schedule);
}

start();
