// forms.js — a client's care forms at /forms (PROTOCOL.md §10; an ES module,
// no build step).
//
// Every form the server defines (`GET /v1/forms`: intake, consent, billing,
// whatever else it adds) is drawn from its definition alone (formfields.js),
// filled in with the client's saved answers (`GET /v1/clients/{me}/forms`),
// and saved with `PUT /v1/me/forms/{name}`; a 422 puts the server's words
// under each field it names (`error.fields`) and the focus on the first. A
// status list (`GET /v1/me/forms`) says which are done, still to fill or,
// for a consent whose terms have changed since it was given, to agree to
// again (its boxes are then left unticked).
//
// `?next=/book/<id>` (the booking page's link after `intake_required`): once
// every form is done the page goes back there; a "Back to your booking" link
// shows meanwhile. Only a path on this site is followed.
//
// Test hooks (data-testid): forms-summary, forms-status, form-status
// (data-form, data-state), form-section (data-form), form-<name>,
// form-state-<name>, form-save-<name>, form-result-<name>, forms-back,
// error-message, live-region; formfields.js's field-<form>-<key> and
// field-error-<form>-<key>.

import { forgetToken, signIn, signOut } from "./auth.js";
import { el, failureText } from "./dom.js";
import { httpRequest } from "./protocol.js";
import { formatWhen } from "./money.js";
import { fieldRow } from "./formfields.js";

const $ = (id) => document.getElementById(id);

const state = {
  token: "",
  clientId: "",
  next: "",
  forms: [], // the definitions, in the server's order
  status: new Map(), // name -> {state, version, updated_at}
  complete: false,
  views: new Map(), // name -> {section, rows, save, result, stateLine}
  busy: new Set(),
};

const api = (method, path, body) => httpRequest(state.token, method, path, body);

function announce(text) {
  $("live").textContent = "";
  window.setTimeout(() => {
    $("live").textContent = text;
  }, 50);
}

function showError(text) {
  $("error").textContent = text || "";
  $("error").hidden = !text;
}

/** A path on this site to return to (`?next=`), or "". */
function safeNext(raw) {
  if (typeof raw !== "string") return "";
  return /^\/(?!\/)[A-Za-z0-9_\-./]*(\?[A-Za-z0-9_\-.=&%]*)?$/.test(raw) ? raw : "";
}

/** A form one agrees to (`consent`, or a required tick box): outdated means "agree again". */
function isAgreement(form) {
  return form.consent === true || (form.fields || []).some((f) => f.type === "bool" && f.required);
}

function stateOf(name) {
  return (state.status.get(name) || {}).state || "missing";
}

function stateWords(form) {
  const s = state.status.get(form.name) || { state: "missing" };
  const saved = s.updated_at ? `, saved ${formatWhen(s.updated_at)}` : "";
  if (s.state === "done") return `Done${saved}`;
  if (s.state === "outdated") {
    return isAgreement(form)
      ? `The terms have changed since you agreed (now version ${form.version}): please read them and agree again`
      : `Done${saved} (an earlier version of this form: check your answers are still right)`;
  }
  return "To fill in";
}

/** Whether this form still stands between the client and a booked session. */
function needed(form) {
  const s = stateOf(form.name);
  return s === "missing" || (s === "outdated" && isAgreement(form));
}

function renderStatus() {
  const list = $("status-list");
  list.replaceChildren(
    ...state.forms.map((form) =>
      el(
        "li",
        { className: "qc-fm-item", "data-testid": "form-status", "data-form": form.name, "data-state": stateOf(form.name) },
        el("a", { href: `#fm-section-${form.name}`, text: form.title || form.name }),
        ": ",
        el("span", { className: needed(form) ? "qc-fm-todo" : "qc-fm-done", text: stateWords(form) }),
      ),
    ),
  );
  const todo = state.forms.filter(needed);
  const summary = $("status-summary");
  if (state.complete || todo.length === 0) {
    summary.textContent = "All your forms are done. You can book sessions.";
  } else {
    const names = todo.map((f) => f.title || f.name).join(", ");
    summary.textContent = `${todo.length === 1 ? "1 form" : `${todo.length} forms`} to fill in before you can book a session: ${names}.`;
  }
  for (const form of state.forms) {
    const view = state.views.get(form.name);
    if (!view) continue;
    view.stateLine.textContent = stateWords(form);
    view.stateLine.className = `qc-fm-state ${needed(form) ? "qc-fm-todo" : "qc-fm-done"}`;
    view.section.dataset.state = stateOf(form.name);
  }
}

function renderForm(form, answers) {
  const outdatedAgreement = stateOf(form.name) === "outdated" && isAgreement(form);
  const rows = (form.fields || []).map((field) => {
    // An agreement to terms that changed is given again: its boxes start unticked.
    const value = outdatedAgreement && field.type === "bool" ? undefined : answers[field.key];
    return { field, ...fieldRow(form, field, value) };
  });
  const titleId = `fm-title-${form.name}`;
  const save = el(
    "button",
    { type: "submit", className: "qc-button qc-button-primary", "data-testid": `form-save-${form.name}` },
    isAgreement(form) ? "Agree and save" : "Save",
    el("span", { className: "qc-visually-hidden", text: ` ${form.title || form.name}` }),
  );
  const result = el("p", {
    className: "qc-fm-result",
    "data-testid": `form-result-${form.name}`,
    role: "status",
    tabindex: "-1",
  });
  const stateLine = el("p", { className: "qc-fm-state", "data-testid": `form-state-${form.name}` });
  const formEl = el(
    "form",
    { "data-testid": `form-${form.name}`, "data-form": form.name, novalidate: true, "aria-labelledby": titleId },
    ...rows.map((r) => r.row),
    el("div", { className: "qc-actions" }, save),
    result,
  );
  const section = el(
    "section",
    {
      id: `fm-section-${form.name}`,
      className: "qc-view qc-fm-form",
      "data-testid": "form-section",
      "data-form": form.name,
      "aria-labelledby": titleId,
    },
    el("h2", { id: titleId, tabindex: "-1", text: form.title || form.name }),
    form.description ? el("p", { className: "qc-fm-description", text: form.description }) : null,
    stateLine,
    formEl,
  );
  const view = { section, rows, save, result, stateLine, title: section.querySelector("h2") };
  state.views.set(form.name, view);
  formEl.addEventListener("submit", (event) => {
    event.preventDefault();
    submit(form, view);
  });
  return section;
}

async function loadStatus() {
  const data = await api("GET", "/v1/me/forms");
  state.status = new Map(((data && data.forms) || []).map((f) => [f.name, f]));
  state.complete = !!(data && data.complete);
}

async function submit(form, view) {
  if (state.busy.has(form.name)) return;
  const body = {};
  for (const r of view.rows) {
    r.setError("");
    const value = r.read();
    if (value !== undefined) body[r.field.key] = value;
  }
  view.result.textContent = "Saving…";
  state.busy.add(form.name);
  view.save.setAttribute("aria-busy", "true");
  try {
    await api("PUT", `/v1/me/forms/${encodeURIComponent(form.name)}`, body);
  } catch (err) {
    failed(form, view, err);
    return;
  } finally {
    state.busy.delete(form.name);
    view.save.removeAttribute("aria-busy");
  }
  const title = form.title || form.name;
  try {
    await loadStatus();
  } catch {
    state.status.set(form.name, { ...(state.status.get(form.name) || {}), state: "done", updated_at: new Date().toISOString() });
  }
  renderStatus();
  view.result.textContent = `Saved ${formatWhen(new Date().toISOString())}.`;
  const todo = state.forms.filter(needed);
  if (todo.length === 0 && state.next) {
    view.result.textContent = "Saved. All your forms are done: taking you back to your booking…";
    announce(view.result.textContent);
    window.setTimeout(() => location.assign(state.next), 600);
    return;
  }
  if (todo.length === 0) {
    announce(`${title} saved. All your forms are done.`);
    view.result.focus();
    return;
  }
  // On to the next form still to fill (after this one, else the first).
  const at = state.forms.indexOf(form);
  const next = todo.find((f) => state.forms.indexOf(f) > at) || todo[0];
  announce(`${title} saved. Next: ${next.title || next.name}.`);
  state.views.get(next.name)?.title.focus();
}

function failed(form, view, err) {
  if (err.status === 401) forgetToken();
  const fields = (err.detail && err.detail.fields) || (err.field ? { [err.field]: err.message } : {});
  const known = view.rows.filter((r) => typeof fields[r.field.key] === "string");
  if (err.status === 422 && known.length) {
    for (const r of known) r.setError(fields[r.field.key]);
    const others = Object.keys(fields).filter((k) => !view.rows.some((r) => r.field.key === k));
    const n = known.length;
    view.result.textContent =
      `Not saved: ${n === 1 ? "1 answer needs" : `${n} answers need`} changing.` +
      (others.length ? ` Also: ${others.map((k) => `${k}: ${fields[k]}`).join("; ")}` : "");
    announce(view.result.textContent);
    known[0].control.focus();
    return;
  }
  view.result.textContent = failureText(err, "Not saved");
  view.result.focus();
}

async function main() {
  const signed = signIn();
  if (!signed) return;
  state.token = signed.token;
  state.clientId = signed.claims.sub;
  $("who").textContent = signed.claims.name || signed.claims.sub;
  $("sign-out").addEventListener("click", () => signOut());
  state.next = safeNext(new URLSearchParams(location.search).get("next"));
  if (state.next) {
    $("back-link").href = state.next;
    $("back-line").hidden = false;
  }
  if (signed.claims.role !== "client") {
    showError("This page is for clients. A therapist sees a client's forms in the console (Bookings, then “Client forms”).");
    $("view-status").hidden = true;
    $("talk-link").hidden = true;
    return;
  }
  let defs;
  try {
    [defs] = await Promise.all([api("GET", "/v1/forms"), loadStatus()]);
  } catch (err) {
    if (err.status === 401) forgetToken();
    $("status-summary").textContent = failureText(err, "Your forms could not be loaded");
    return;
  }
  state.forms = (defs && Array.isArray(defs.forms) ? defs.forms : []).filter((f) => f && typeof f.name === "string");
  // The answers already given, to change rather than type again.
  const answers = new Map();
  try {
    const mine = await api("GET", `/v1/clients/${encodeURIComponent(state.clientId)}/forms`);
    for (const f of (mine && mine.forms) || []) answers.set(f.name, f.answers || {});
  } catch {
    // empty fields: the status list still says what was done
  }
  $("forms").replaceChildren(...state.forms.map((form) => renderForm(form, answers.get(form.name) || {})));
  renderStatus();
}

main();
