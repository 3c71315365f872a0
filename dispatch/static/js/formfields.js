// formfields.js — the fields of a care form (PROTOCOL.md §10 `GET /v1/forms`),
// drawn from its definition alone, and its answers in words (an ES module, no
// build step). Shared by the client's /forms page (forms.js) and the console's
// "Client forms" view (clientforms.js).
//
// API
//   fieldRow(form, field, value?) -> {row, control, error, read(), setError(text)}
//     One field as a labelled control, by `type`: text -> <input type=text>,
//     long_text -> <textarea>, date -> <input type=date>, bool -> a checkbox,
//     choice -> <select> (its `options`), phone -> <input type=tel>,
//     email -> <input type=email>; an unknown type is a text input. The help
//     text and the error line are tied to the control by aria-describedby; a
//     required field is marked (a "*" and aria-required). `value` fills it in.
//     read() -> the answer to send: a boolean for bool, a trimmed string
//     otherwise, or undefined when left empty (the key is then left out).
//   optionsOf(field) -> [{value, label}]   `options` as strings or {value, label}
//   answerWords(field, value) -> an answer in words ("Yes", "No", a choice's
//     label, a date as "2 April 1990", the text itself; "Not answered" when absent)
//   fieldId(form, field) -> the control's element id
//
// Test hooks (data-testid): field-<form>-<key> (the control),
// field-error-<form>-<key> (its error line).

import { el } from "./dom.js";

/** Longest answers the server takes, by type (PROTOCOL.md §10). */
export const MAX_LENGTH = { text: 200, long_text: 4000, phone: 40, email: 254 };

/** Browser autofill hints for fields that are the client's own (never for a contact's). */
const AUTOCOMPLETE = {
  billing_name: "name",
  address_line1: "address-line1",
  address_line2: "address-line2",
  line1: "address-line1",
  line2: "address-line2",
  city: "address-level2",
  postcode: "postal-code",
  country: "country",
  date_of_birth: "bday",
};

function slug(text) {
  return String(text).replace(/[^A-Za-z0-9_-]/g, "_");
}

export function fieldId(form, field) {
  return `fm-${slug(form.name)}-${slug(field.key)}`;
}

export function optionsOf(field) {
  const list = Array.isArray(field.options) ? field.options : [];
  return list.map((o) =>
    o && typeof o === "object"
      ? { value: String(o.value ?? ""), label: String(o.label ?? o.value ?? "") }
      : { value: String(o), label: String(o) },
  );
}

export function answerWords(field, value) {
  if (value === undefined || value === null || value === "") return "Not answered";
  if (field.type === "bool") return value === true ? "Yes" : "No";
  if (field.type === "date" && /^\d{4}-\d{2}-\d{2}$/.test(String(value))) {
    // A calendar day, the same in every time zone: "2 April 1990".
    const day = new Date(`${value}T00:00:00Z`);
    if (!Number.isNaN(day.getTime())) {
      return day.toLocaleDateString("en-GB", { timeZone: "UTC", day: "numeric", month: "long", year: "numeric" });
    }
  }
  if (field.type === "choice") {
    const option = optionsOf(field).find((o) => o.value === String(value));
    return option ? option.label : String(value);
  }
  return String(value);
}

function control(field, id, describedBy) {
  const common = {
    id,
    name: field.key,
    "data-testid": `field-${field.form}-${field.key}`,
    "aria-describedby": describedBy,
    "aria-required": field.required ? "true" : null,
  };
  const max = MAX_LENGTH[field.type];
  switch (field.type) {
    case "long_text":
      return el("textarea", { ...common, rows: 5, maxlength: max });
    case "date":
      return el("input", { ...common, type: "date" });
    case "bool":
      return el("input", { ...common, type: "checkbox" });
    case "choice":
      return el(
        "select",
        common,
        el("option", { value: "", text: "Choose…" }),
        ...optionsOf(field).map((o) => el("option", { value: o.value, text: o.label })),
      );
    case "phone":
      return el("input", { ...common, type: "tel", inputmode: "tel", maxlength: max, spellcheck: "false" });
    case "email":
      return el("input", { ...common, type: "email", maxlength: max, spellcheck: "false" });
    default:
      return el("input", {
        ...common,
        type: "text",
        maxlength: MAX_LENGTH.text,
        autocomplete: AUTOCOMPLETE[field.key] || null,
      });
  }
}

export function fieldRow(form, field, value) {
  const id = fieldId(form, field);
  const helpId = `${id}-help`;
  const errorId = `${id}-error`;
  const describedBy = [field.help ? helpId : null, errorId].filter(Boolean).join(" ");
  const input = control({ ...field, form: form.name }, id, describedBy);
  const mark = field.required
    ? el("span", { className: "qc-fm-req", "aria-hidden": "true", text: " *" })
    : el("span", { className: "qc-muted", text: " (optional)" });
  const help = field.help ? el("p", { id: helpId, className: "qc-hint", text: field.help }) : null;
  const error = el("p", {
    id: errorId,
    className: "qc-field-error",
    "data-testid": `field-error-${form.name}-${field.key}`,
    hidden: true,
  });
  let row;
  if (field.type === "bool") {
    input.checked = value === true;
    row = el(
      "div",
      { className: "qc-field qc-fm-field", "data-key": field.key },
      el("label", { className: "qc-check" }, input, el("span", {}, field.label || field.key, mark)),
      help,
      error,
    );
  } else {
    if (value !== undefined && value !== null) input.value = String(value);
    row = el(
      "div",
      { className: "qc-field qc-fm-field", "data-key": field.key },
      el("label", { for: id }, field.label || field.key, mark),
      help,
      input,
      error,
    );
  }

  function read() {
    if (field.type === "bool") return input.checked;
    const text = input.value.trim();
    return text ? text : undefined;
  }

  function setError(text) {
    error.textContent = text || "";
    error.hidden = !text;
    if (text) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }

  input.addEventListener(field.type === "bool" || field.type === "choice" ? "change" : "input", () => setError(""));
  return { row, control: input, error, read, setError };
}
