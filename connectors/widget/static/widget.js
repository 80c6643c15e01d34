/* leadgate site widget: chat, callback request and form in one script tag.
   Plain modern JavaScript, no framework, no build step. Served by the gateway at
   /v1/widget/NAME.js with its stylesheet filled in for `css` below.
   Rules kept here: text from visitors, sellers and the server is only ever set with
   textContent (never parsed as HTML), no eval or inline handlers (strict CSP, Trusted
   Types), styles only through a constructable stylesheet in a Shadow DOM. */
((css) => {
  "use strict";
  const me = document.currentScript;
  const src = me && me.src ? new URL(me.src, location.href) : null;
  const found = src && src.pathname.match(/^(.*)\/v1\/widget\/([a-z0-9][a-z0-9_-]{0,39})\.js$/);
  if (!found) return;
  const base = src.origin + found[1];
  const name = found[2];
  const api = `${base}/v1/widget/${name}`;
  const flag = Symbol.for(`leadgate.widget.${name}`);
  if (window[flag]) return; // the tag twice on one page: one widget
  window[flag] = true;

  const KEY = `leadgate:${name}:`;
  const store = {
    get(k) { try { return JSON.parse(localStorage.getItem(KEY + k)); } catch { return null; } },
    set(k, v) { try { localStorage.setItem(KEY + k, JSON.stringify(v)); } catch { /* private mode */ } },
  };
  const langs = [document.documentElement.lang, ...(navigator.languages || [navigator.language])]
    .filter(Boolean).join(",");
  const zone = (() => { try { return Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch { return ""; } })();
  const query = `lang=${encodeURIComponent(langs)}&tz=${encodeURIComponent(zone)}`;
  const random = (n) => {
    const bytes = crypto.getRandomValues(new Uint8Array(n));
    return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  };
  // The visitor: a random token kept in this browser; it resumes the chat after a reload,
  // in another tab, after the phone slept. The server keeps only a hash of it.
  let token = store.get("token");
  if (typeof token !== "string" || !/^[A-Za-z0-9_-]{32}$/.test(token)) {
    token = random(24);
    store.set("token", token);
  }

  // --- DOM helpers: elements and text only --------------------------------------------
  const h = (tag, attrs, ...kids) => {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === false || v == null) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids) if (kid != null) el.append(kid);
    return el;
  };
  const SVG = "http://www.w3.org/2000/svg";
  const icon = (d) => {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", d);
    svg.append(path);
    return svg;
  };
  const CHAT_ICON = "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H8l-4 4V6a2 2 0 0 1 2-2z";
  const CLOSE_ICON = "M6.4 5 12 10.6 17.6 5 19 6.4 13.4 12 19 17.6 17.6 19 12 13.4 6.4 19 5 17.6 10.6 12 5 6.4z";

  // --- the phone mask: +7 (916) 123-45-67; other countries as typed ----------------------
  const maskPhone = (raw) => {
    const plus = raw.trim().startsWith("+");
    let d = raw.replace(/\D/g, "");
    if (!d) return plus ? "+" : "";
    if (plus && d[0] !== "7") return `+${d.slice(0, 15)}`;
    if (!plus && d[0] === "8") d = `7${d.slice(1)}`;
    if (d[0] !== "7") d = `7${d}`;
    d = d.slice(0, 11);
    let out = "+7";
    if (d.length > 1) out += ` (${d.slice(1, 4)}`;
    if (d.length >= 4) out += ")";
    if (d.length > 4) out += ` ${d.slice(4, 7)}`;
    if (d.length > 7) out += `-${d.slice(7, 9)}`;
    if (d.length > 9) out += `-${d.slice(9, 11)}`;
    return out;
  };
  const phoneOk = (value) => {
    const d = value.replace(/\D/g, "");
    return value.startsWith("+7") ? d.length === 11 : d.length >= 8 && d.length <= 15;
  };
  const emailOk = (value) => /^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(value);

  // --- the shell ------------------------------------------------------------------------
  const host = h("div", { "data-leadgate-widget": name });
  const shadow = host.attachShadow({ mode: "open" });
  if (shadow.adoptedStyleSheets !== undefined && "replaceSync" in CSSStyleSheet.prototype) {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(css);
    shadow.adoptedStyleSheets = [sheet];
  } else {
    shadow.append(h("link", { rel: "stylesheet", href: `${base}/v1/widget/widget.css` }));
  }
  host.hidden = true;

  let state = null; // the last state answer
  let ui = null; // the built interface
  let texts = {};
  const t = (key) => texts[key] || key;

  // --- state: what to show, and when to ask again -------------------------------------
  let timer = 0;
  let dueAt = 0;
  let failures = 0;
  const schedule = (ms) => {
    clearTimeout(timer);
    const wait = Math.max(0, Math.min(ms, 15 * 60e3));
    dueAt = Date.now() + wait;
    timer = setTimeout(refresh, wait);
  };
  async function refresh() {
    clearTimeout(timer);
    let answer;
    try {
      const response = await fetch(`${api}/state?${query}`, { credentials: "omit", cache: "no-store" });
      if (!response.ok) throw new Error(`state ${response.status}`);
      answer = await response.json();
      failures = 0;
    } catch {
      failures += 1;
      schedule(Math.min(300e3, 5e3 * 2 ** Math.min(failures, 6)));
      return;
    }
    apply(answer);
    // Just after the change, spread over a second so a page full of visitors does not
    // ask in the same millisecond.
    schedule(answer.recheck_in * 1000 + 250 + Math.random() * 1000);
  }
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && Date.now() >= dueAt) refresh();
    if (!document.hidden) chat.wake();
  });
  addEventListener("online", () => { refresh(); chat.wake(); });

  function apply(answer) {
    state = answer;
    if (!answer.visible) {
      // An open panel stays until the visitor closes it: nobody is cut off mid-sentence.
      if (!ui || ui.panel.hidden) host.hidden = true;
      if (ui) ui.hideLater = true;
      return;
    }
    texts = answer.texts;
    if (!ui) build(answer);
    ui.hideLater = false;
    host.hidden = false;
    update(answer);
  }

  // --- building the interface ---------------------------------------------------------
  function build(answer) {
    host.style.setProperty("--lg-accent", answer.color);
    const root = h("div", { class: answer.position === "left" ? "root left" : "root" });
    host.style.setProperty("--lg-on-accent", answer.color_text);
    const badge = h("span", { class: "badge", hidden: true, "aria-hidden": "true" });
    const launcherText = h("span", { text: t("launcher") });
    const launcher = h("button", {
      class: "launcher", type: "button", "aria-haspopup": "dialog", "aria-expanded": "false",
      "aria-controls": "lg-panel", onclick: () => open(),
    }, icon(CHAT_ICON), launcherText, badge);
    const title = h("h2", { id: "lg-title", text: answer.title });
    const closeButton = h("button", { class: "close", type: "button", "aria-label": t("close"), onclick: () => close() }, icon(CLOSE_ICON));
    const tablist = h("div", { class: "tabs", role: "tablist", "aria-label": t("tabs") });
    const panel = h("div", {
      class: "panel", id: "lg-panel", role: "dialog", "aria-modal": "true",
      "aria-labelledby": "lg-title", hidden: true,
    }, h("div", { class: "head" }, title, closeButton), tablist);
    const tabs = {};
    for (const id of ["chat", "callback", "form"]) {
      const tab = h("button", {
        class: "tab", type: "button", role: "tab", id: `lg-tab-${id}`, "aria-controls": `lg-pane-${id}`,
        "aria-selected": "false", tabindex: "-1", text: t(`tab_${id}`), onclick: () => select(id, true),
      });
      const pane = h("section", { class: `pane ${id}`, role: "tabpanel", id: `lg-pane-${id}`, "aria-labelledby": `lg-tab-${id}`, tabindex: "0", hidden: true });
      tabs[id] = { tab, pane, shown: false };
      tablist.append(tab);
      panel.append(pane);
    }
    tablist.addEventListener("keydown", onTabKey);
    panel.addEventListener("keydown", onPanelKey);
    root.append(launcher, panel);
    shadow.append(root);
    ui = { root, launcher, launcherText, badge, panel, title, tablist, tabs, selected: null, hideLater: false };
    buildChat(tabs.chat.pane, answer);
    buildRequest(tabs.callback.pane, "callback", answer);
    buildRequest(tabs.form.pane, "form", answer);
  }

  function update(answer) {
    const shown = new Map(answer.tabs.map((tab) => [tab.id, tab]));
    for (const [id, parts] of Object.entries(ui.tabs)) {
      const tab = shown.get(id);
      parts.shown = Boolean(tab);
      parts.tab.hidden = !tab;
      if (parts.note) {
        parts.note.hidden = !(tab && tab.note);
        parts.note.textContent = (tab && tab.note) || "";
        if (parts.intro) parts.intro.hidden = Boolean(tab && tab.note);
      }
    }
    ui.tablist.hidden = answer.tabs.length < 2;
    if (!ui.selected || !ui.tabs[ui.selected].shown) select(answer.tabs[0].id, false);
    chat.setOpen(shown.has("chat"));
  }

  function select(id, focus) {
    ui.selected = id;
    for (const [key, parts] of Object.entries(ui.tabs)) {
      const on = key === id;
      parts.tab.setAttribute("aria-selected", String(on));
      parts.tab.tabIndex = on ? 0 : -1;
      parts.pane.hidden = !on;
    }
    if (focus) ui.tabs[id].tab.focus();
    if (id === "chat") chat.seen();
  }

  function onTabKey(event) {
    const ids = Object.keys(ui.tabs).filter((id) => ui.tabs[id].shown);
    const at = ids.indexOf(ui.selected);
    const to = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: ids.length - 1 }[event.key];
    if (to === undefined) return;
    event.preventDefault();
    select(ids[(to + ids.length) % ids.length], true);
  }

  const FOCUSABLE = "button, [href], input, select, textarea, [tabindex]:not([tabindex='-1'])";
  function onPanelKey(event) {
    if (event.key === "Escape") {
      event.preventDefault();
      close();
      return;
    }
    if (event.key !== "Tab") return;
    // The focus stays in the dialog while it is open (aria-modal).
    const items = [...ui.panel.querySelectorAll(FOCUSABLE)].filter(
      (el) => !el.disabled && el.getClientRects().length > 0 && !el.closest("[hidden], .hp"),
    );
    if (!items.length) return;
    const first = items[0];
    const last = items[items.length - 1];
    const active = shadow.activeElement;
    if (event.shiftKey && (active === first || !items.includes(active))) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && (active === last || !items.includes(active))) {
      event.preventDefault();
      first.focus();
    }
  }

  let pageOverflow = "";
  const phone = () => matchMedia("(max-width: 520px)").matches;
  function open() {
    ui.panel.hidden = false;
    ui.root.classList.add("open");
    ui.launcher.hidden = true;
    ui.launcher.setAttribute("aria-expanded", "true");
    if (phone()) {
      pageOverflow = document.documentElement.style.overflow;
      document.documentElement.style.overflow = "hidden";
    }
    ui.tabs[ui.selected].tab.focus();
    if (ui.selected === "chat") chat.seen();
  }
  function close() {
    ui.panel.hidden = true;
    ui.root.classList.remove("open");
    ui.launcher.hidden = false;
    ui.launcher.setAttribute("aria-expanded", "false");
    document.documentElement.style.overflow = pageOverflow;
    if (ui.hideLater) host.hidden = true;
    else ui.launcher.focus();
  }

  // --- fields -----------------------------------------------------------------------------
  let uid = 0;
  function field(spec) {
    const id = `lg-f${++uid}`;
    const errId = `${id}-err`;
    const attrs = { id, name: spec.name, "aria-describedby": errId, required: spec.required };
    let input;
    if (spec.kind === "textarea") {
      input = h("textarea", { ...attrs, maxlength: spec.max_length, rows: "3" });
    } else if (spec.kind === "choice") {
      input = h("select", attrs, h("option", { value: "", text: t("choose") }),
        ...spec.choices.map((c) => h("option", { value: c.value, text: c.label })));
    } else {
      const type = { phone: "tel", email: "email" }[spec.kind] || "text";
      const auto = { phone: "tel", email: "email", name: "name" }[spec.kind === "text" ? spec.name : spec.kind];
      input = h("input", { ...attrs, type, maxlength: spec.max_length, autocomplete: auto || "off", inputmode: spec.kind === "phone" ? "tel" : null });
      if (spec.kind === "phone" && state.phone_mask) {
        input.placeholder = "+7 (___) ___-__-__";
        input.addEventListener("input", (event) => {
          const before = input.value;
          let value = maskPhone(before);
          // Deleting a bracket or a dash would be put back by the mask: take a digit instead.
          if (event.inputType && event.inputType.startsWith("delete") && value.length > before.length) {
            value = maskPhone(value.replace(/\d(?=\D*$)/, ""));
          }
          input.value = value === "+7" && !before.replace(/\D/g, "") ? "" : value;
        });
      }
    }
    const err = h("span", { class: "err", id: errId });
    // The star is for the eye; a screen reader hears "required" from the input itself.
    const star = spec.required ? h("span", { class: "star", "aria-hidden": "true", text: " *" }) : null;
    const label = h("label", { for: id }, h("span", null, spec.label, star), input, err);
    return { spec, input, err, label };
  }
  function setError(f, message) {
    f.err.textContent = message || "";
    if (message) f.input.setAttribute("aria-invalid", "true");
    else f.input.removeAttribute("aria-invalid");
  }
  function checkField(f) {
    const value = f.input.value.trim();
    if (!value) return f.spec.required ? t("required") : "";
    if (f.spec.kind === "phone" && !phoneOk(value)) return t("phone_invalid");
    if (f.spec.kind === "email" && !emailOk(value)) return t("email_invalid");
    return "";
  }
  function consentBox() {
    const input = h("input", { type: "checkbox", name: "consent", "aria-describedby": "" });
    const err = h("span", { class: "err", id: `lg-f${++uid}-err` });
    input.setAttribute("aria-describedby", err.id);
    const [before, after] = t("consent").split("{link}");
    const link = h("a", { href: state.policy_url, target: "_blank", rel: "noopener noreferrer", text: t("consent_link") });
    const label = h("label", { class: "consent" }, input, h("span", null, before, link, after || ""));
    return { input, err, label, spec: { name: "consent" } };
  }
  function honeypot(hpName) {
    if (!hpName) return null;
    // A field no person sees or reaches; a bot filling every input fills it too.
    return h("div", { class: "hp", "aria-hidden": "true" },
      h("input", { type: "text", name: hpName, tabindex: "-1", autocomplete: "off" }));
  }
  const utm = () => {
    const out = {};
    for (const [k, v] of new URLSearchParams(location.search)) if (/^utm_(source|medium|campaign|content|term)$/.test(k)) out[k] = v.slice(0, 200);
    return out;
  };

  async function post(path, body, key) {
    const response = await fetch(`${api}/${path}`, {
      method: "POST", credentials: "omit",
      headers: { "Content-Type": "application/json", "Idempotency-Key": key, "X-Leadgate-Visitor": token },
      body: JSON.stringify(body),
    });
    let data = {};
    try { data = await response.json(); } catch { /* not JSON: a proxy's page */ }
    return { ok: response.ok, status: response.status, data };
  }

  // The callback request and the form: fields, consent, honeypot, one answer.
  function buildRequest(pane, kind, answer) {
    const specs = kind === "callback"
      ? [
        { name: "name", label: t("name"), kind: "text", required: false, max_length: 200 },
        { name: "phone", label: t("phone"), kind: "phone", required: true, max_length: 40 },
      ]
      : answer.form;
    const intro = h("p", { text: t(`${kind}_intro`) });
    const note = h("p", { class: "note", hidden: true });
    const fields = specs.map(field);
    const consent = consentBox();
    const alert = h("p", { class: "alert", role: "alert" });
    const submit = h("button", { class: "submit", type: "submit", text: t(`${kind}_submit`) });
    const done = h("p", { class: "done", role: "status", tabindex: "-1", hidden: true });
    const form = h("form", { novalidate: true },
      ...fields.map((f) => f.label), honeypot(answer.honeypot), consent.label, consent.err, alert, submit);
    let key = random(16);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      alert.textContent = "";
      let firstBad = null;
      for (const f of fields) {
        const message = checkField(f);
        setError(f, message);
        if (message && !firstBad) firstBad = f.input;
      }
      const consentMessage = consent.input.checked ? "" : t("consent_required");
      setError(consent, consentMessage);
      if (consentMessage && !firstBad) firstBad = consent.input;
      if (firstBad) { firstBad.focus(); return; }
      const body = { ...utm(), page: location.href.slice(0, 1000), tz: zone, lang: langs, consent: true };
      for (const f of fields) if (f.input.value.trim()) body[f.spec.name] = f.input.value.trim();
      const trap = form.querySelector(".hp input");
      if (trap && trap.value) body[trap.name] = trap.value;
      submit.disabled = true;
      submit.textContent = t("sending");
      try {
        const result = await post(kind, body, key);
        if (result.ok) {
          key = random(16);
          form.reset();
          form.hidden = true;
          intro.hidden = true;
          done.textContent = result.data.message || "";
          done.hidden = false;
          done.focus();
          return;
        }
        const bad = result.data.fields || {};
        for (const f of [...fields, consent]) if (bad[f.spec.name]) setError(f, bad[f.spec.name]);
        alert.textContent = result.data.detail || t("failed");
      } catch {
        alert.textContent = t("failed");
      } finally {
        submit.disabled = false;
        submit.textContent = t(`${kind}_submit`);
      }
    });
    pane.append(intro, note, form, done);
    Object.assign(ui.tabs[kind], { intro, note });
  }

  // --- chat -------------------------------------------------------------------------------
  const chat = (() => {
    let ws = null;
    let pane = null;
    let log = null;
    let status = null;
    let input = null;
    let sendButton = null;
    let prechat = null;
    let attempts = 0;
    let retry = 0;
    let ping = 0;
    let pongDue = 0;
    let unread = 0;
    let open = false;
    const shownIds = new Set();
    let pending = store.get("pending") || []; // sent, not yet acknowledged: survive a reload
    let contact = store.get("contact"); // pre-chat answers and consent, sent with the first message
    let settings = null; // the state answer the chat was built from (to ask for consent again)
    const started = () => Boolean(store.get("started"));

    function build(target, answer) {
      pane = target;
      log = h("div", { class: "log", role: "log", "aria-live": "polite", "aria-label": t("tab_chat") });
      status = h("p", { class: "status", role: "status" });
      const id = `lg-f${++uid}`;
      input = h("textarea", { id, rows: "1", maxlength: answer.max_message_chars, placeholder: t("message") });
      sendButton = h("button", { class: "send", type: "submit", text: t("send") });
      const compose = h("form", { class: "compose", novalidate: true },
        h("label", { class: "vh", for: id, text: t("message") }), input, sendButton);
      compose.addEventListener("submit", (event) => { event.preventDefault(); sendText(); });
      input.addEventListener("keydown", (event) => {
        if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); sendText(); }
      });
      const [before, after] = t("consent").split("{link}");
      const policy = h("p", { class: "policy" }, before,
        h("a", { href: answer.policy_url, target: "_blank", rel: "noopener noreferrer", text: t("consent_link") }), after || "");
      log.append(line("greeting", t("greeting"), null, null));
      pane.append(log, status, compose, policy);
      settings = answer;
      // 152-ФЗ: the first message needs the visitor's consent, as the form does.
      if (!started()) buildPrechat(answer);
    }

    function buildPrechat(answer) {
      const specs = answer.prechat.map((p) => ({
        name: p.name, label: p.label, kind: p.name === "name" ? "text" : p.name,
        required: answer.prechat_required, max_length: p.name === "email" ? 320 : 200,
      }));
      const fields = specs.map(field);
      const consent = consentBox();
      const alert = h("p", { class: "alert", role: "alert" });
      const form = h("form", { class: "prechat", novalidate: true },
        fields.length ? h("p", { text: t("prechat_intro") }) : null, ...fields.map((f) => f.label),
        consent.label, consent.err, alert, h("button", { class: "submit", type: "submit", text: t("start_chat") }));
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        let firstBad = null;
        const given = {};
        for (const f of fields) {
          const message = checkField(f);
          setError(f, message);
          if (message && !firstBad) firstBad = f.input;
          if (f.input.value.trim()) given[f.spec.name] = f.input.value.trim();
        }
        const consentMessage = consent.input.checked ? "" : t("consent_required");
        setError(consent, consentMessage);
        if (consentMessage && !firstBad) firstBad = consent.input;
        if (firstBad) { firstBad.focus(); return; }
        contact = { ...given, consent: true };
        store.set("contact", contact);
        store.set("started", true);
        form.remove();
        prechat = null;
        for (const el of pane.children) el.hidden = false;
        if (pending.length) {
          // Refused for want of consent: the waiting messages go now, the first with it.
          pending[0].contact = contact;
          contact = null;
          store.set("contact", null);
          store.set("pending", pending);
          say("", false);
          for (const item of pending) transmit(item);
          connect();
        }
        input.focus();
      });
      prechat = form;
      for (const el of pane.children) el.hidden = true;
      pane.prepend(form);
    }

    function line(author, text, at, id) {
      const who = { customer: t("you"), auto: t("auto"), seller: t("seller") }[author];
      const el = h("div", { class: author === "customer" ? "msg in" : "msg" },
        who ? h("span", { class: "who", text: who }) : null, h("span", { class: "text", text }));
      if (id) el.dataset.id = id;
      if (at) el.title = new Date(at).toLocaleString();
      return el;
    }

    function show(message) {
      const mine = message.client_id && log.querySelector(`[data-client="${CSS.escape(message.client_id)}"]`);
      if (message.client_id) {
        // Stored: no longer ours to resend.
        pending = pending.filter((p) => p.client_id !== message.client_id);
        store.set("pending", pending);
      }
      if (shownIds.has(message.id)) {
        if (mine) mine.remove();
        return;
      }
      shownIds.add(message.id);
      const el = line(message.author, message.text, message.at, message.id);
      if (mine) mine.replaceWith(el);
      else log.append(el);
      log.scrollTop = log.scrollHeight;
      if (message.author !== "customer" && (ui.panel.hidden || ui.selected !== "chat")) {
        unread += 1;
        ui.badge.textContent = String(unread);
        ui.badge.hidden = false;
        ui.launcher.setAttribute("aria-label", `${t("launcher")} (${unread})`);
      }
    }

    function say(text, isAlert) {
      status.textContent = text || "";
      status.className = isAlert ? "status alert" : "status";
    }

    function sendText() {
      const text = input.value.trim();
      if (!text) return;
      if (text.length > state.max_message_chars) {
        say(t("too_long").replace("{limit}", state.max_message_chars), true);
        return;
      }
      const item = { client_id: random(12), text };
      if (contact) { item.contact = contact; contact = null; store.set("contact", null); }
      pending.push(item);
      store.set("pending", pending);
      store.set("started", true);
      input.value = "";
      draft(item);
      transmit(item);
      connect();
    }

    function draft(item) {
      const el = line("customer", item.text, null, null);
      el.classList.add("pending");
      el.dataset.client = item.client_id;
      log.append(el);
      log.scrollTop = log.scrollHeight;
    }

    function transmit(item) {
      if (ws && ws.readyState === WebSocket.OPEN && ws.ready) ws.send(JSON.stringify({ type: "message", ...item }));
    }

    function connect() {
      if (ws && ws.readyState <= WebSocket.OPEN) return;
      clearTimeout(retry);
      const socket = new WebSocket(`${api.replace(/^http/, "ws")}/ws?${query}`);
      ws = socket;
      socket.addEventListener("open", () => {
        socket.send(JSON.stringify({ type: "hello", token }));
      });
      socket.addEventListener("message", (event) => {
        let message;
        try { message = JSON.parse(event.data); } catch { return; }
        receive(socket, message);
      });
      socket.addEventListener("close", () => {
        clearInterval(ping);
        if (ws !== socket) return;
        ws = null;
        if (pending.length || started()) say(t("offline"), false);
        attempts += 1;
        retry = setTimeout(connect, Math.min(30e3, 1000 * 2 ** Math.min(attempts, 5)) * (0.5 + Math.random() / 2));
      });
    }

    function receive(socket, message) {
      if (message.type === "welcome") {
        attempts = 0;
        socket.ready = true;
        say("", false);
        for (const m of message.messages) show(m);
        for (const item of pending) {
          if (!log.querySelector(`[data-client="${CSS.escape(item.client_id)}"]`)) draft(item);
          transmit(item);
        }
        clearInterval(ping);
        pongDue = 0;
        // A socket a sleeping phone left half-open says nothing: ask, and reconnect
        // when no answer comes.
        ping = setInterval(() => {
          if (pongDue && Date.now() > pongDue) { socket.close(); return; }
          pongDue = Date.now() + 10e3;
          socket.send(JSON.stringify({ type: "ping" }));
        }, 25e3);
      } else if (message.type === "pong") {
        pongDue = 0;
      } else if (message.type === "ack") {
        show(message.message);
      } else if (message.type === "message") {
        show(message.message);
      } else if (message.type === "error") {
        say(message.detail, true);
        if (message.code === "consent_required") {
          // No conversation without consent (a page of an older widget, storage cleared
          // by half): ask for it; the message waits and goes once it is given.
          store.set("started", false);
          if (!prechat && settings) buildPrechat(settings);
          return;
        }
        if (message.client_id) {
          const item = pending.find((p) => p.client_id === message.client_id);
          if (item && message.retry_after) {
            setTimeout(() => transmit(item), message.retry_after * 1000);
          } else if (item) {
            // Refused for good (too long, chat closed): give the text back to edit.
            pending = pending.filter((p) => p !== item);
            store.set("pending", pending);
            const el = log.querySelector(`[data-client="${CSS.escape(item.client_id)}"]`);
            if (el) el.remove();
            if (!input.value) input.value = item.text;
          }
        }
      }
    }

    return {
      build,
      setOpen(isOpen) {
        open = isOpen;
        sendButton.disabled = !open && !started();
        if (open && (started() || pending.length)) connect();
      },
      wake() {
        if (started() && (!ws || ws.readyState > WebSocket.OPEN)) { attempts = 0; connect(); }
      },
      seen() {
        unread = 0;
        if (ui) { ui.badge.hidden = true; ui.launcher.removeAttribute("aria-label"); }
        if (open && started()) connect();
      },
    };
  })();
  const buildChat = (pane, answer) => chat.build(pane, answer);

  const start = () => { document.body.append(host); refresh(); };
  if (document.body) start();
  else document.addEventListener("DOMContentLoaded", start);
})(/*@css*/"");
