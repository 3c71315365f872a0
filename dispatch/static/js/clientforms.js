// clientforms.js — the console's "Client forms" view: what a client answered
// on its care forms and the consents on record (PROTOCOL.md §10
// `GET /v1/clients/{id}/forms`, labelled by `GET /v1/forms`; an ES module, no
// build step).
//
// API
//   initClientForms({token, announce, showView, currentView, baseView})
//     -> {open(clientId, name?, opener?), back()}   name: as the caller shows it
//     (a first name), else "client <id>"
//     open() shows <section id="view-clientforms"> (console.html) for that
//     client: each form with its version, when it was saved and every answer
//     in words (formfields.js's answerWords), or "Not filled in yet"; then the
//     consent records, each with its kind, version and time — a guardian's
//     consent given with a minor's request says so, with that request's id.
//     The server records every such read in the audit trail (the view says so).
//     "Back" returns to the view it was opened from (the bookings, the call,
//     the requests) and gives the focus back to `opener` (the pressed button).
//
// Everything a client wrote reaches the page as text, never as HTML.
//
// Test hooks (data-testid): clientforms-view, clientforms-title,
// clientforms-error, clientforms-form (data-form, data-state: done | missing),
// clientforms-answer (data-key), clientforms-consents, clientforms-consent
// (data-kind), clientforms-no-consent.

import { BACK_WORDS, el, failureText } from "./dom.js";
import { httpRequest } from "./protocol.js";
import { formatWhen } from "./money.js";
import { answerWords } from "./formfields.js";

const $ = (id) => document.getElementById(id);

const BACK = { ...BACK_WORDS, bookings: "Back to your bookings", calllog: "Back to the call log" };

function consentWords(c, definitions) {
  const version = c.version !== undefined && c.version !== null ? `version ${c.version}` : "no version";
  const when = c.given_at ? formatWhen(c.given_at) : "at an unknown time";
  if (c.kind === "guardian") {
    const about = c.about_id ? ` with the request ${c.about_id}` : "";
    return `A parent or guardian's consent (a client under 18), given${about}: ${version} of the consent terms, on ${when}.`;
  }
  if (c.kind === "consent") {
    const form = definitions.find((f) => f.name === "consent");
    const current = form && Number(form.version) > Number(c.version) ? ` (the terms are now version ${form.version})` : "";
    return `Agreed to the therapy and privacy terms: ${version}${current}, on ${when}.`;
  }
  return `${c.kind || "Consent"}: ${version}, on ${when}.`;
}

export function initClientForms({ token, announce, showView, currentView, baseView = () => "list" }) {
  const ui = {
    view: $("view-clientforms"),
    title: $("clientforms-title"),
    back: $("clientforms-back"),
    loading: $("clientforms-loading"),
    error: $("clientforms-error"),
    body: $("clientforms-body"),
  };
  if (!ui.view) return { open() {}, back() {} };
  const api = (method, path) => httpRequest(token(), method, path);
  let definitions = null; // GET /v1/forms, loaded once
  let returnTo = "list";
  let opener = null;
  let wanted = null; // the client last asked for (a slow answer for another is dropped)

  function formPart(def, given) {
    const fields = def.fields || [];
    const meta = given
      ? `Version ${given.version}${Number(def.version) > Number(given.version) ? ` (the form is now version ${def.version})` : ""}, saved ${formatWhen(given.updated_at)}.`
      : "Not filled in yet.";
    const answers = (given && given.answers) || {};
    const known = new Set(fields.map((f) => f.key));
    const rows = [
      ...fields,
      ...Object.keys(answers).filter((k) => !known.has(k)).map((k) => ({ key: k, label: k, type: "text" })),
    ];
    return el(
      "section",
      { className: "qc-cf-form", "data-testid": "clientforms-form", "data-form": def.name, "data-state": given ? "done" : "missing" },
      el("h3", { text: def.title || def.name }),
      el("p", { className: given ? "qc-log-meta" : "qc-cf-missing", text: meta }),
      given
        ? el(
            "dl",
            { className: "qc-cf-answers" },
            ...rows.map((f) =>
              el(
                "div",
                { className: "qc-cf-answer", "data-testid": "clientforms-answer", "data-key": f.key },
                el("dt", { text: f.label || f.key }),
                el("dd", { text: answerWords(f, answers[f.key]) }),
              ),
            ),
          )
        : null,
    );
  }

  function render(data) {
    const defs = definitions || [];
    const given = new Map(((data && data.forms) || []).map((f) => [f.name, f]));
    const parts = defs.map((def) => formPart(def, given.get(def.name)));
    for (const [name, f] of given) {
      if (!defs.some((d) => d.name === name)) parts.push(formPart({ name, title: name, version: f.version, fields: [] }, f));
    }
    const consents = Array.isArray(data && data.consents) ? data.consents : [];
    parts.push(
      el(
        "section",
        { className: "qc-cf-consents", "data-testid": "clientforms-consents" },
        el("h3", { text: "Consent records" }),
        consents.length
          ? el(
              "ul",
              { className: "qc-cf-list" },
              ...consents.map((c) =>
                el(
                  "li",
                  {
                    className: `qc-cf-consent${c.kind === "guardian" ? " qc-cf-guardian" : ""}`,
                    "data-testid": "clientforms-consent",
                    "data-kind": c.kind || "",
                  },
                  consentWords(c, defs),
                ),
              ),
            )
          : el("p", { className: "qc-muted", "data-testid": "clientforms-no-consent", text: "No consent on record yet." }),
      ),
    );
    ui.body.replaceChildren(...parts);
    const done = defs.filter((d) => given.has(d.name)).length;
    return `${done} of ${defs.length} forms filled in, ${consents.length === 1 ? "1 consent record" : `${consents.length} consent records`}`;
  }

  async function load(clientId) {
    ui.loading.hidden = false;
    ui.error.hidden = true;
    ui.body.replaceChildren();
    try {
      const [defs, data] = await Promise.all([
        definitions ? Promise.resolve(null) : api("GET", "/v1/forms"),
        api("GET", `/v1/clients/${encodeURIComponent(clientId)}/forms`),
      ]);
      if (defs) definitions = Array.isArray(defs.forms) ? defs.forms : [];
      if (wanted !== clientId) return "";
      return render(data);
    } catch (err) {
      if (wanted !== clientId) return "";
      ui.error.textContent =
        err.status === 403
          ? "You can see the forms of a client you have had a booking or a session with only."
          : failureText(err, "The client's forms could not be loaded");
      ui.error.hidden = false;
      return "";
    } finally {
      if (wanted === clientId) ui.loading.hidden = true;
    }
  }

  async function open(clientId, name = "", from = null) {
    if (!clientId) return;
    wanted = clientId;
    opener = from || (document.activeElement instanceof HTMLElement ? document.activeElement : null);
    const who = name || `client ${clientId}`;
    ui.title.textContent = `Forms of ${who}`;
    ui.view.dataset.clientId = clientId;
    if (currentView() !== "clientforms") {
      returnTo = currentView() || baseView();
      ui.back.textContent = BACK[returnTo] || "Back";
      showView("clientforms");
    } else {
      ui.title.focus();
    }
    const words = await load(clientId);
    if (words) announce(`Forms of ${who}: ${words}.`);
  }

  function back() {
    // The view it came from, unless that is gone (a call that ended meanwhile).
    const to = returnTo === "call" && baseView() !== "call" ? baseView() : returnTo;
    showView(to, { focus: !(opener && opener.isConnected) });
    if (opener && opener.isConnected) opener.focus();
  }

  ui.back.addEventListener("click", back);
  return { open, back };
}
