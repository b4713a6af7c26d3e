// The Config tab: every editable field of PUT /daemon/config, grouped as the operator
// thinks of them, checked here with the daemon's own rules before anything is sent, and
// the daemon's refusal (`<field>: <problem>`) shown at the field it names. The "This
// window" card is not part of that form: its preferences (ui.toml, PUT /ui/prefs) are
// applied and stored as soon as they change, with no Save.

import { h } from "./views.js";

const GROUPS = [
  ["Connection", [
    { key: "apiBaseUrl", label: "Studio API base URL", type: "url", help: "Where the studio is, e.g. https://minis.gg. A change reconnects the worker." },
  ]],
  ["Worker", [
    { key: "vramThresholdGb", label: "VRAM threshold (GB)", type: "gb", help: "The most GPU memory the studio may plan a job for on this machine (0–96 GB, one decimal)." },
  ]],
  ["Auto-update", [
    { key: "autoUpdateEnabled", label: "Update automatically", type: "bool" },
    { key: "autoUpdateIntervalSecs", label: "Check every (seconds)", type: "int", min: 60, help: "At least 60 seconds." },
    { key: "autoUpdateFeed", label: "Release feed URL", type: "url", help: "The update repository the worker trusts." },
    { key: "autoUpdatePrerelease", label: "Track pre-releases", type: "bool" },
  ]],
  ["Models", [
    { key: "modelsRoot", label: "Models folder", type: "text", restart: true, help: "A new folder applies after a restart." },
  ]],
  ["Start-up", [
    { key: "autoStart", label: "Start with my machine", type: "bool" },
    { key: "startMinimised", label: "Start the window minimised", type: "bool" },
    { key: "onlyWhenIdle", label: "Only utilise when I'm not using this computer", type: "bool", help: "Experimental. Takes studio jobs only after 2 minutes without keyboard or mouse input; a job that is running carries on." },
  ]],
  ["Local API", [
    { key: "localApiPort", label: "Local API port", type: "port", restart: true, help: "Empty: 4787. 0: any free port. Applies after a restart." },
  ]],
];

const FIELDS = GROUPS.flatMap(([, fields]) => fields);

function httpUrl(value) {
  try {
    const url = new URL(value.trim());
    return (url.protocol === "http:" || url.protocol === "https:") && url.hostname !== "";
  } catch {
    return false;
  }
}

// The value to send for a field, or {error} with the daemon's wording.
function parse(field, input) {
  const raw = field.type === "bool" ? input.checked : input.value;
  switch (field.type) {
    case "bool":
      return { value: raw };
    case "url":
      return httpUrl(raw) ? { value: raw.trim() } : { error: "must be an http(s) URL" };
    case "gb": {
      const n = Number(raw);
      return raw.trim() !== "" && Number.isFinite(n) && n >= 0 ? { value: Math.round(n * 10) / 10 } : { error: "must be a number of GB, 0 or more" };
    }
    case "int": {
      const n = Number(raw);
      if (raw.trim() === "" || !Number.isInteger(n)) return { error: "must be a whole number of seconds" };
      return n >= field.min ? { value: n } : { error: "must be at least 60 seconds" };
    }
    case "port": {
      if (raw.trim() === "") return { value: null };
      const n = Number(raw);
      return Number.isInteger(n) && n >= 0 && n <= 65535 ? { value: n } : { error: "must be a port number (0-65535) or null" };
    }
    default:
      return raw.trim() ? { value: raw } : { error: "must not be empty" };
  }
}

function show(field, input, value) {
  if (field.type === "bool") input.checked = Boolean(value);
  else input.value = value === null || value === undefined ? "" : String(value);
}

export class ConfigForm {
  constructor(panel, api, say, extraCard = null) {
    this.api = api;
    this.say = say;
    this.saved = null; // the daemon's config the form started from
    this.inputs = new Map();
    this.errors = new Map();
    this.state = h("span", { "data-testid": "config-state", "data-state": "clean", role: "status" }, "Up to date");
    this.saveBtn = h("button", { class: "btn primary", type: "submit", disabled: true }, "Save");
    this.resetBtn = h("button", { class: "btn", type: "button", disabled: true, onclick: () => this.reset() }, "Reset");
    const form = h("form", { class: "config-form", novalidate: true, onsubmit: (e) => { e.preventDefault(); this.save(); } },
      h("div", { class: "form-footer" }, this.state, h("span", { class: "grow" }), this.resetBtn, this.saveBtn),
      h("div", { class: "config-grid" }, GROUPS.map(([title, fields]) => h("fieldset", { class: "card form-card" },
        h("legend", { class: "visually-hidden" }, title),
        h("h2", { "aria-hidden": "true" }, title),
        fields.map((f) => this.field(f)),
      )), extraCard),
    );
    panel.replaceChildren(form);
  }

  field(f) {
    const id = `cfg-${f.key}`;
    let input;
    if (f.type === "bool") input = h("input", { id, type: "checkbox", class: "switch", name: f.key });
    else if (f.type === "gb") input = h("input", { id, type: "number", min: 0, max: 96, step: 0.1, name: f.key, inputmode: "decimal" });
    else if (f.type === "int" || f.type === "port") input = h("input", { id, type: "number", step: 1, min: f.type === "int" ? f.min : 0, max: f.type === "port" ? 65535 : undefined, name: f.key, placeholder: f.type === "port" ? "4787" : undefined });
    else input = h("input", { id, type: f.type === "url" ? "url" : "text", name: f.key, spellcheck: "false", autocomplete: "off" });
    input.addEventListener("input", () => this.changed());
    input.addEventListener("change", () => this.changed());
    const error = h("div", { class: "error", id: `${id}-error`, role: "alert" });
    input.setAttribute("aria-describedby", `${id}-error${f.help ? ` ${id}-help` : ""}`);
    this.inputs.set(f.key, input);
    this.errors.set(f.key, error);
    const control = h("div", { class: "control" }, input);
    if (f.type === "gb") {
      const slider = h("input", { type: "range", min: 0, max: 96, step: 0.1, "aria-label": `${f.label} slider`, tabindex: -1 });
      slider.addEventListener("input", () => { input.value = slider.value; this.changed(); });
      input.addEventListener("input", () => { slider.value = input.value; });
      this.slider = slider;
      control.append(slider);
    }
    return h("div", { class: "field" },
      h("label", { for: id }, f.label, f.restart ? h("span", { class: "hint" }, " (restart)") : ""),
      control,
      f.help ? h("div", { class: "help", id: `${id}-help` }, f.help) : null,
      error,
    );
  }

  // A clean form follows the daemon (another client or the CLI may change the file);
  // edits survive polls.
  update(config) {
    if (!config) return;
    const first = this.saved === null;
    this.saved = config;
    if (first || this.pending().size === 0) {
      for (const f of FIELDS) show(f, this.inputs.get(f.key), config[f.key]);
      if (this.slider) this.slider.value = config.vramThresholdGb ?? 0;
      this.changed();
    }
  }

  pending() {
    const out = new Map();
    if (!this.saved) return out;
    for (const f of FIELDS) {
      const input = this.inputs.get(f.key);
      const parsed = parse(f, input);
      const before = this.saved[f.key];
      if ("error" in parsed) {
        out.set(f.key, parsed);
      } else if (parsed.value !== before && !(parsed.value === null && before === undefined)) {
        out.set(f.key, parsed);
      }
    }
    return out;
  }

  changed() {
    const pending = this.pending();
    let invalid = false;
    for (const f of FIELDS) {
      const p = pending.get(f.key);
      const error = p && "error" in p ? p.error : "";
      invalid ||= Boolean(error);
      this.setError(f.key, error);
    }
    this.saveBtn.disabled = pending.size === 0 || invalid;
    this.resetBtn.disabled = pending.size === 0;
    if (this.state.dataset.state === "saving") return;
    if (pending.size === 0) this.setState("clean", this.state.dataset.state === "saved" ? this.state.textContent : "Up to date");
    else this.setState("dirty", invalid ? "Fix the marked fields" : "Unsaved changes");
  }

  setError(key, message) {
    const input = this.inputs.get(key);
    this.errors.get(key).textContent = message ? `${message}` : "";
    if (message) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }

  setState(state, text) {
    this.state.dataset.state = state;
    this.state.textContent = text;
  }

  reset() {
    this.setState("clean", "Up to date");
    for (const f of FIELDS) show(f, this.inputs.get(f.key), this.saved?.[f.key]);
    if (this.slider) this.slider.value = this.saved?.vramThresholdGb ?? 0;
    this.changed();
  }

  async save() {
    const pending = this.pending();
    if ([...pending.values()].some((p) => "error" in p) || pending.size === 0) return;
    const body = Object.fromEntries([...pending].map(([k, p]) => [k, p.value]));
    this.setState("saving", "Saving…");
    this.saveBtn.disabled = true;
    try {
      const answer = await this.api("PUT", "/daemon/config", body);
      this.saved = answer.config;
      for (const f of FIELDS) show(f, this.inputs.get(f.key), answer.config[f.key]);
      const what = answer.changed.length ? `Saved: ${answer.changed.join(", ")}` : "Saved (nothing changed)";
      this.setState("saved", answer.restartRequired ? `${what}. Restart the worker to apply.` : what);
      this.say(answer.restartRequired ? `${what}; restart required` : what);
    } catch (err) {
      const message = err.body?.message || err.message;
      const [key, ...rest] = message.split(": ");
      if (this.errors.has(key)) this.setError(key, rest.join(": "));
      this.setState("error", `Not saved: ${message}`);
      this.say(`Config not saved: ${message}`, true);
      return;
    } finally {
      if (this.state.dataset.state === "saving") this.setState("dirty", "Unsaved changes");
    }
    this.changed();
  }
}

// ---- "This window": theme, reduce motion, notifications (ui.toml) -------------------------

const PREF_SWITCHES = [
  ["reduceMotion", "Reduce motion", "No transitions or animations in this window."],
  ["notifyOnCompletion", "Notify when a job completes", "A desktop notification from the tray app (studio-worker ui): kind and model."],
  ["notifyOnFailure", "Notify when a job fails", "A desktop notification from the tray app (studio-worker ui), with the reason."],
];

export class WindowCard {
  // `change(key, value)` applies and stores one preference.
  constructor(change) {
    this.inputs = new Map();
    const theme = h("select", { id: "pref-theme", name: "theme", "aria-describedby": "pref-theme-help" },
      h("option", { value: "dark" }, "Dark"), h("option", { value: "light" }, "Light"), h("option", { value: "system" }, "Follow system"));
    theme.addEventListener("change", () => change("theme", theme.value));
    this.inputs.set("theme", theme);
    const field = (id, label, input, help) => h("div", { class: "field" },
      h("label", { for: id }, label), h("div", { class: "control" }, input),
      h("div", { class: "help", id: `${id}-help` }, help));
    this.el = h("fieldset", { class: "card form-card", "data-testid": "window-prefs" },
      h("legend", { class: "visually-hidden" }, "This window"),
      h("h2", { "aria-hidden": "true" }, "This window"),
      field("pref-theme", "Theme", theme, "Also in the header. Applied and stored at once, like everything on this card."),
      PREF_SWITCHES.map(([key, label, help]) => {
        const id = `pref-${key}`;
        const input = h("input", { id, type: "checkbox", class: "switch", name: key, "aria-describedby": `${id}-help` });
        input.addEventListener("change", () => change(key, input.checked));
        this.inputs.set(key, input);
        return field(id, label, input, help);
      }),
    );
  }

  update(prefs) {
    for (const [key, input] of this.inputs) {
      if (input.type === "checkbox") input.checked = Boolean(prefs[key]);
      else input.value = prefs[key];
    }
  }
}
