// Rendering of the read-only tabs. Everything is built with DOM nodes and textContent,
// never innerHTML: prompts, job ids and log lines come from the studio and the engines.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "style") el.style.cssText = value; // CSSOM: allowed by the page's CSP
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function pill(text, tone, testid) {
  return h("span", { class: "pill", dataset: { tone }, "data-testid": testid }, text);
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = n;
  for (const unit of units) {
    if (Math.abs(value) < 1000 || unit === "TB") {
      return unit === "B" ? `${Math.round(value)} B` : `${value.toFixed(1)} ${unit}`;
    }
    value /= 1000;
  }
  return `${n} B`;
}

export function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  const total = Math.max(0, Math.round(ms / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = total % 60;
  const mm = String(minutes).padStart(hours ? 2 : 1, "0");
  const ss = String(seconds).padStart(2, "0");
  return hours ? `${hours}:${mm}:${ss}` : `${mm}:${ss}`;
}

export function ago(iso, now = Date.now()) {
  if (!iso) return "never";
  const ms = now - Date.parse(iso);
  if (Number.isNaN(ms)) return iso;
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

export function clock(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleTimeString([], { hour12: false });
}

function stamp(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString([], { hour12: false });
}

function facts(rows) {
  return h("dl", { class: "facts" }, rows.filter(Boolean).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function card(title, ...body) {
  return h("section", { class: "card" }, h("h2", {}, title), ...body);
}

// ---- the header's one-word state, shared by the header and the Status tab ------------

export function overall(status, link) {
  if (link !== "connected" || !status) return { text: "Daemon unreachable", tone: "bad" };
  const session = status.session?.state;
  const reg = status.registration?.state;
  if (reg === "rejected") return { text: "Registration rejected", tone: "bad" };
  if (session === "auth_failed") return { text: "Studio auth failed", tone: "bad" };
  if (session === "fatal") return { text: "Stopped: fatal error", tone: "bad" };
  if (status.busy) return { text: "Busy", tone: "warn" };
  if (status.paused) return { text: "Paused", tone: "warn" };
  if (reg === "pending" || session === "waiting_for_approval") return { text: "Awaiting approval", tone: "info" };
  if (session === "reconnecting") return { text: `Reconnecting (${status.session.attempt ?? 1})`, tone: "warn" };
  if (session === "connecting") return { text: "Connecting", tone: "info" };
  if (session === "stopped") return { text: "Stopped", tone: "muted" };
  return { text: "Idle", tone: "good" };
}

export function activity(status) {
  const job = status?.currentJob;
  if (!job) return status?.paused ? "Claiming paused: studio offers are declined" : "Ready for studio jobs";
  const parts = [`Running ${job.kind}`, job.model, duration(job.elapsedMs)];
  if (job.progress !== null && job.progress !== undefined) parts.push(`${Math.round(job.progress * 100)}%`);
  return parts.join(" · ");
}

const SESSION_TEXT = {
  waiting_for_approval: ["Waiting for approval", "info"],
  connecting: ["Connecting", "info"],
  connected: ["Connected", "good"],
  reconnecting: ["Reconnecting", "warn"],
  auth_failed: ["Auth failed", "bad"],
  fatal: ["Fatal error", "bad"],
  stopped: ["Stopped", "muted"],
};

// ---- Status ----------------------------------------------------------------------------

export function renderStatus(status, actions) {
  const now = Date.now();
  const state = overall(status, "connected");
  const reg = status.registration || {};
  const session = status.session || {};
  const cfg = status.config || {};
  const out = [];

  if (reg.state === "pending") {
    out.push(
      h("section", { class: "banner info", role: "status", "data-testid": "approval-hint" },
        h("h2", {}, "Waiting for the studio operator to approve this worker"),
        h("p", {}, "Ask the operator of ", h("code", {}, cfg.apiBaseUrl || "the studio"),
          " to approve registration request ", h("code", {}, reg.requestId || "(not sent yet)"),
          reg.since ? ` (waiting since ${stamp(reg.since)})` : "", ". The worker checks again on its own and connects as soon as it is approved."),
      ),
    );
  } else if (reg.state === "rejected") {
    out.push(
      h("section", { class: "banner bad", role: "alert" },
        h("h2", {}, "The studio operator rejected this worker"),
        h("p", {}, reg.reason ? `Reason: ${reg.reason}` : "No reason was given."),
        h("button", { class: "btn", type: "button", onclick: actions.resetRegistration }, "Reset registration and ask again"),
      ),
    );
  } else if (session.state === "auth_failed") {
    out.push(h("section", { class: "banner bad", role: "alert" }, h("h2", {}, "The studio refused this worker's credentials"),
      h("p", {}, session.reason || "", " Re-register with ", h("code", {}, "studio-worker register --reset"), ".")));
  }

  out.push(
    h("section", { class: `card hero${status.busy ? " now-running" : ""}` },
      pill(state.text, state.tone, "status-state"),
      h("div", { class: "grow" }, h("div", { class: "big" }, activity(status)),
        h("div", { class: "sub" }, status.workerId ? `Worker ${status.workerId}` : "Not registered yet")),
      h("button", { class: `btn${status.paused ? " primary" : ""}`, type: "button", "data-testid": "status-pause", onclick: actions.togglePause },
        status.paused ? "Resume taking jobs" : "Pause taking jobs"),
    ),
  );

  const [sessionText, sessionTone] = SESSION_TEXT[session.state] || [session.state || "unknown", "muted"];
  const hb = status.heartbeat;
  const heartbeat = hb
    ? h("span", {}, pill(hb.outcome === "ok" ? "ok" : "failed", hb.outcome === "ok" ? "good" : "bad"), " ", ago(hb.lastAttemptAt, now),
        hb.reason ? h("span", { class: "muted" }, ` — ${hb.reason}`) : "")
    : h("span", { class: "muted" }, "none yet");
  const threshold = cfg.vramThresholdGb;
  const vramTotal = status.vramTotalGb;

  out.push(
    h("div", { class: "grid" },
      card("Studio",
        facts([
          ["Connection", h("span", {}, pill(sessionText, sessionTone, "session-state"), session.attempt ? ` attempt ${session.attempt}` : "")],
          ["Registration", reg.state === "approved" || status.registered ? "approved" : reg.state || "unknown"],
          ["Worker id", status.workerId ? h("code", {}, status.workerId) : h("span", { class: "muted" }, "—")],
          ["Studio URL", h("code", {}, cfg.apiBaseUrl || "—")],
          ["Last heartbeat", heartbeat],
        ])),
      card("Hardware",
        facts([
          ["VRAM total", vramTotal ? `${vramTotal.toFixed(1)} GB` : "not detected (CPU)"],
          ["VRAM threshold", threshold !== undefined ? `${Number(threshold).toFixed(1)} GB` : "—"],
          ["Engines", (status.engines || []).join(", ") || "—"],
          ["State", status.paused ? "paused" : status.busy ? "busy" : "idle"],
          ["Local API", h("code", {}, status.localApiUrl || "—")],
        ])),
      renderWhyNoJobs(status, now),
    ),
  );
  return out;
}

function renderWhyNoJobs(status, now) {
  const cfg = status.config || {};
  const reasons = [];
  if (status.paused) reasons.push("Claiming is paused: every offer is declined with reason “paused”. Resume to take jobs.");
  if (status.registration?.state === "pending") reasons.push("The worker is not approved yet: the studio sends no offers until it is.");
  if (status.session?.state && status.session.state !== "connected") reasons.push(`Not connected to the studio (${status.session.state.replaceAll("_", " ")}).`);
  if (cfg.onlyWhenIdle) reasons.push("“Only when idle” is on: offers are declined while someone uses this computer.");
  if (status.busy) reasons.push("A job is running: new offers are declined as busy until it ends.");
  const declined = status.declinedOffers || [];
  return h("section", { class: "card wide", "data-testid": "why-no-jobs" },
    h("h2", {}, "Why no jobs?"),
    reasons.length
      ? h("ul", {}, reasons.map((r) => h("li", {}, r)))
      : h("p", { class: "muted" }, "Nothing on this worker holds jobs back: the studio offers jobs when it has work that fits the models and VRAM threshold it was told about."),
    h("h3", {}, "Last declined offers"),
    declined.length === 0
      ? h("p", { class: "empty" }, "No offer has been declined since the daemon started.")
      : h("table", { "data-testid": "declined-offers" },
          h("thead", {}, h("tr", {}, h("th", {}, "When"), h("th", {}, "Job"), h("th", {}, "Kind · model"), h("th", {}, "Why"))),
          h("tbody", {}, declined.map((d) => h("tr", { "data-job": d.jobId },
            h("td", { title: d.at }, ago(d.at, now)),
            h("td", {}, h("code", {}, d.jobId)),
            h("td", {}, `${d.kind} · ${d.model}`),
            h("td", {}, pill(d.code, d.code === "paused" ? "warn" : "info"), " ", d.reason),
          ))),
        ),
  );
}

// ---- Jobs ------------------------------------------------------------------------------

const OUTCOME = { running: ["Running", "info"], completed: ["Done", "good"], failed: ["Failed", "bad"] };

export function jobBadge(job) {
  const [text, tone] = OUTCOME[job.outcome] || [job.outcome, "muted"];
  return pill(text, tone);
}

export function renderCurrentJob(job, downloads = []) {
  if (!job) return h("section", { class: "card", "data-testid": "current-job" }, h("h2", {}, "Now running"), h("p", { class: "empty" }, "Nothing is running. Studio offers and local API requests show up here."));
  const pct = job.progress === null || job.progress === undefined ? null : Math.round(job.progress * 100);
  return h("section", { class: "card now-running", "data-testid": "current-job" },
    h("h2", {}, "Now running"),
    h("div", { class: "hero" },
      h("div", { class: "grow" },
        h("div", { class: "big" }, `${job.kind} · ${job.model}`),
        h("div", { class: "sub" }, job.prompt || "No prompt"),
      ),
      pill(job.source, "muted"),
      h("span", { class: "mono", "data-testid": "current-elapsed" }, duration(job.elapsedMs)),
    ),
    h("div", { class: "progress job-progress", role: "progressbar", "aria-label": "Job progress", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": pct ?? undefined },
      h("span", { style: `width:${pct ?? 0}%` })),
    h("p", { class: "hint" }, pct !== null
      ? `${pct}%${job.progressNote ? ` — ${job.progressNote}` : ""}`
      : fetchNote(downloads.filter((d) => d.model === job.model)) || "The engine has not reported progress yet."),
  );
}

function fetchNote(files) {
  if (!files.length) return "";
  const done = files.reduce((n, d) => n + d.bytesDone, 0);
  const total = files.every((d) => d.bytesTotal) ? files.reduce((n, d) => n + d.bytesTotal, 0) : null;
  return `Fetching the model's files: ${bytes(done)}${total ? ` of ${bytes(total)}` : ""}`;
}

export function renderJobTable(jobs, selected, onSelect) {
  if (!jobs.length) return h("p", { class: "empty" }, "No job has run since the daemon started.");
  return h("table", { "data-testid": "job-history" },
    h("thead", {}, h("tr", {}, h("th", {}, "Started"), h("th", {}, "Job"), h("th", {}, "Kind · model"), h("th", { class: "num" }, "Took"), h("th", {}, "Outcome"))),
    h("tbody", {}, jobs.map((job) => h("tr", {
      class: `selectable${job.jobId === selected ? " selected" : ""}`, tabindex: 0, "data-job": job.jobId,
      "aria-selected": job.jobId === selected ? "true" : "false",
      onclick: () => onSelect(job.jobId),
      onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); onSelect(job.jobId); } },
    },
    h("td", { title: job.startedAt }, clock(job.startedAt)),
    h("td", {}, h("div", {}, (job.prompt || "").slice(0, 80) || h("span", { class: "muted" }, "No prompt")),
      h("div", { class: "hint" }, h("code", {}, job.jobId), ` · ${job.source}`)),
    h("td", {}, `${job.kind} · ${job.model}`),
    h("td", { class: "num" }, duration(job.elapsedMs)),
    h("td", {}, jobBadge(job)),
    ))),
  );
}

export function renderJobDetail(job, log) {
  if (!job) return h("p", { class: "empty" }, "Select a job to see its details and log.");
  const lines = log?.lines || [];
  return h("div", { class: "stack" },
    facts([
      ["Job", h("code", {}, job.jobId)],
      ["Source", job.source],
      ["Kind · model", `${job.kind} · ${job.model} (${job.engine})`],
      ["Started", stamp(job.startedAt)],
      ["Duration", duration(job.elapsedMs)],
      ["Outcome", h("span", {}, jobBadge(job), job.error ? ` ${job.error}` : "")],
      ["Prompt", job.prompt || h("span", { class: "muted" }, "No prompt")],
    ]),
    h("h3", {}, "Job log"),
    h("div", { class: "logview joblog", "data-testid": "job-log" },
      lines.length ? lines.map((l) => logLine(l, false)) : h("p", { class: "empty", style: "padding:0 0.75rem" }, "No log lines for this job in the daemon's log ring.")),
  );
}

export function logLine(entry, withTarget = true) {
  return h("div", { class: "logline" },
    h("span", { class: "ts", title: entry.ts }, clock(entry.ts)),
    h("span", { class: `lvl-${entry.level}` }, entry.level.toUpperCase()),
    withTarget ? h("span", { class: "target", title: entry.target }, entry.target) : null,
    h("span", { class: "msg" }, entry.message, entry.jobId && withTarget ? h("span", { class: "muted" }, `  [${entry.jobId}]`) : ""),
  );
}

// ---- Models ----------------------------------------------------------------------------

export function renderModels(models, pulls, status, actions) {
  const current = status?.currentJob;
  const downloads = status?.downloads || [];
  const list = models?.models || [];
  const running = (pulls?.pulls || []).filter((p) => p.state === "running").map((p) => p.id);
  const fetching = (m) => running.includes(m.id) || downloads.some((d) => d.model === m.model);
  const inUse = (m) => current && current.engine === m.engine && current.model === m.model;
  const gateHolder = status?.gateHolder || null;
  const loading = (m) => gateHolder === `load ${m.id}`;
  const memory = (m) => inUse(m) ? pill("in use", "info")
    : loading(m) ? pill("loading…", "info")
    : m.resident ? pill(`loaded (${m.residentIn})`, "good", `resident-${m.id}`)
    : fetching(m) ? pill("downloading", "info")
    : m.loadable ? pill("not loaded", "muted")
    : pill("per job", "muted");
  return [
    renderResidency(models?.engines || [], gateHolder, actions),
    h("section", { class: "card", "data-testid": "downloads" },
      h("h2", {}, "Downloads"),
      downloads.length === 0
        ? h("p", { class: "empty" }, "No download in progress.")
        : downloads.map((d) => {
            const pct = d.bytesTotal ? Math.round((100 * d.bytesDone) / d.bytesTotal) : null;
            return h("div", { class: "stack", style: "gap:0.25rem;margin-bottom:0.75rem" },
              h("div", {}, h("strong", {}, d.model), " ", h("code", {}, d.filename)),
              h("div", { class: "progress", role: "progressbar", "aria-label": `Download of ${d.filename}`, "aria-valuenow": pct ?? undefined, "aria-valuemin": 0, "aria-valuemax": 100 },
                h("span", { style: `width:${pct ?? 0}%` })),
              h("div", { class: "hint" }, `${bytes(d.bytesDone)}${d.bytesTotal ? ` of ${bytes(d.bytesTotal)}` : ""} at ${bytes(d.bytesPerSec)}/s${d.etaSecs !== null ? `, ${duration(d.etaSecs * 1000)} left` : ""}`),
            );
          }),
      (pulls?.pulls || []).length
        ? h("table", { "data-testid": "pulls" },
            h("thead", {}, h("tr", {}, h("th", {}, "Pull"), h("th", {}, "Files"), h("th", {}, "State"))),
            h("tbody", {}, pulls.pulls.map((p) => h("tr", {},
              h("td", {}, h("code", {}, p.id)),
              h("td", {}, p.files.join(", ")),
              h("td", {}, pill(p.state, p.state === "done" ? "good" : p.state === "failed" ? "bad" : "info"), p.error ? ` ${p.error}` : ""),
            ))))
        : null,
    ),
    h("section", { class: "card", "data-testid": "model-cache" },
      h("h2", {}, "Model cache"),
      h("p", { class: "hint" }, "Folder ", h("code", {}, models?.root || "—"),
        ". Each engine runs in a process of its own, started by its first job, and keeps the last model it loaded for the next job; Load puts a cached model in memory ahead of a job."),
      list.length === 0
        ? h("p", { class: "empty" }, "The cache is empty: models arrive with the first studio job that needs them, or with a pull below.")
        : h("table", {},
            h("thead", {}, h("tr", {}, h("th", {}, "Model"), h("th", {}, "Engine"), h("th", {}, "Files"), h("th", { class: "num" }, "Size"), h("th", {}, "Memory"), h("th", {}, ""))),
            h("tbody", {}, list.map((m) => h("tr", { "data-model": m.id },
              h("td", {}, h("strong", {}, m.model)),
              h("td", {}, m.engine),
              h("td", {}, m.files.map((f) => h("div", {}, h("code", {}, f.name), h("span", { class: "muted" }, ` ${bytes(f.sizeBytes)}`))),
                m.partialFiles.map((f) => h("div", {}, h("code", {}, f.name), " ", pill("partial", "warn"), h("span", { class: "muted" }, ` ${bytes(f.sizeBytes)} so far`)))),
              h("td", { class: "num" }, bytes(m.sizeBytes)),
              h("td", {}, memory(m)),
              h("td", { class: "actions" },
                m.loadable && !m.resident
                  ? h("button", { class: "btn small", type: "button", "data-testid": `load-${m.id}`, onclick: () => actions.loadModel(m), disabled: gateHolder !== null || fetching(m) || undefined, title: gateHolder !== null ? `Busy: ${gateHolder}` : "Load into memory now" }, "Load")
                  : null,
                h("button", { class: "btn small danger", type: "button", onclick: () => actions.deleteModel(m), disabled: inUse(m) || fetching(m) || undefined, title: inUse(m) || fetching(m) ? "In use or downloading" : undefined }, "Delete")),
            ))),
          ),
    ),
  ];
}

function renderResidency(engines, gateHolder, actions) {
  const hosted = engines.filter((e) => e.hosted);
  return h("section", { class: "card", "data-testid": "residency" },
    h("h2", {}, "Loaded in memory"),
    hosted.length === 0
      ? h("p", { class: "empty" }, "No engine of this install loads models (only the synthetic one, which computes its answers).")
      : h("table", {},
          h("thead", {}, h("tr", {}, h("th", {}, "Engine"), h("th", {}, "Process"), h("th", {}, "Holds"), h("th", {}, ""))),
          h("tbody", {}, hosted.map((e) => h("tr", { "data-engine": e.name },
            h("td", {}, h("strong", {}, e.name), h("span", { class: "muted" }, ` ${e.wireNames.join(", ")}`)),
            h("td", {}, e.running ? h("span", {}, pill(e.busy ? "working" : "running", e.busy ? "info" : "good"), h("span", { class: "muted" }, ` pid ${e.pid}`)) : pill("not started", "muted")),
            h("td", {}, e.resident.length === 0
              ? h("span", { class: "muted" }, "nothing")
              : e.resident.map((r) => h("div", {}, r.model ? h("strong", {}, r.model) : null, " ", h("code", {}, r.file)))),
            h("td", {}, h("button", { class: "btn small", type: "button", "data-testid": `unload-${e.name}`, onclick: () => actions.unloadEngine(e), disabled: !e.running || gateHolder !== null || undefined, title: !e.running ? "No process to stop" : gateHolder !== null ? `Busy: ${gateHolder}` : "Stop the engine process: all of its memory is freed; the next job starts it again" }, "Unload")),
          ))),
        ),
    h("p", { class: "hint" }, "Unload stops the engine's process, which frees everything it held; its next job starts it again and loads that job's model. Load and Unload wait for a running job (the worker does one thing at a time)."),
  );
}

// ---- About -----------------------------------------------------------------------------

export function renderAbout(about, update, actions) {
  if (!about) return [h("p", { class: "empty" }, "Loading…")];
  const au = about.autoUpdate || {};
  let result = null;
  if (update) {
    const tone = update.error ? "bad" : update.outcome === "available" ? "warn" : update.outcome === "up-to-date" ? "good" : "info";
    result = h("div", { class: `banner ${tone === "bad" ? "bad" : tone === "warn" ? "warn" : "info"}`, role: "status", "data-testid": "update-result" },
      update.error ? h("strong", {}, update.error) : h("span", {}, pill(update.outcome, tone), " ", update.message || ""));
  }
  return [
    h("div", { class: "grid" },
      card("studio-worker",
        facts([
          ["Version", h("strong", { "data-testid": "about-version" }, about.version)],
          ["Variant", about.variant],
          ["Platform", `${about.platform} · Python ${about.python}`],
          ["Engines", about.engines.join(", ")],
          ["Process", `pid ${about.pid}`],
        ])),
      card("Files",
        facts([
          ["Config", h("span", {}, h("code", { "data-testid": "about-config-path" }, about.configPath), " ",
            h("button", { class: "btn small", type: "button", onclick: () => actions.copy(about.configPath) }, "Copy"))],
          ["Models", h("code", {}, about.modelsRoot)],
          ["Local API", h("code", {}, about.localApiUrl || "—")],
        ])),
      h("section", { class: "card wide" },
        h("h2", {}, "Updates"),
        facts([
          ["Automatic updates", au.enabled ? `on, every ${au.intervalSecs} s${au.prerelease ? ", pre-releases included" : ""}` : "off"],
          ["Feed", h("code", {}, au.feed || "—")],
        ]),
        h("p", {}),
        h("button", { class: "btn primary", type: "button", "data-testid": "check-updates", onclick: actions.checkUpdates }, "Check for updates"),
        h("p", {}),
        result,
      ),
    ),
  ];
}
