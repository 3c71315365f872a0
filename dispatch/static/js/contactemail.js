// contactemail.js — a client's "Email for confirmations and reminders" field
// (`GET` / `PATCH /v1/me/contact`; an ES module, no build step).
//
// API
//   initContactEmail({form, input, error, status, save, api}) -> {load()}
//     form: the <form>; input: its <input type="email">; error: the line that
//     says what is wrong (in words); status: a role="status" line saying what
//     is saved; save: the submit button. api(method, path, body) -> JSON.
//   load() reads the saved address into the field. Submitting saves it; an
//   empty field removes it (no booking emails). A refusal is said in words,
//   next to the field (aria-invalid), and the field gets the focus back.
//
// Test hooks (data-testid, in the page): contact, contact-form, contact-email,
// contact-error, contact-save, contact-status.

import { failureText } from "./dom.js";

/** What the server takes (dispatch/validation.py parse_email), checked first to say it sooner. */
const ADDRESS_RE = /^[^@\s]+@[^@\s]+\.[^@\s]+$/;
const ADDRESS_MAX = 254;
const BAD_ADDRESS = "Enter an email address like name@example.com, or leave the field empty.";

export function initContactEmail({ form, input, error, status, save, api }) {
  let busy = false;

  function setError(text) {
    error.textContent = text || "";
    error.hidden = !text;
    if (text) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }

  function sayStatus(email) {
    status.textContent = email
      ? "Confirmations and reminders are emailed to this address."
      : "No email saved: confirmations and reminders are not emailed.";
  }

  async function load() {
    const data = await api("GET", "/v1/me/contact");
    const email = (data && typeof data.email === "string" && data.email) || "";
    input.value = email;
    sayStatus(email);
  }

  async function submit(event) {
    event.preventDefault();
    if (busy) return;
    setError("");
    const value = input.value.trim();
    if (value && (value.length > ADDRESS_MAX || !ADDRESS_RE.test(value))) {
      setError(BAD_ADDRESS);
      input.focus();
      return;
    }
    busy = true;
    save.disabled = true;
    save.setAttribute("aria-busy", "true");
    try {
      const data = await api("PATCH", "/v1/me/contact", { email: value || null });
      const email = (data && typeof data.email === "string" && data.email) || "";
      input.value = email;
      status.textContent = email
        ? "Saved. Confirmations and reminders will be emailed to this address."
        : "Removed. Confirmations and reminders will not be emailed.";
    } catch (err) {
      setError(err.code === "invalid_field" ? BAD_ADDRESS : failureText(err, "The email was not saved"));
      input.focus();
    } finally {
      busy = false;
      save.disabled = false;
      save.removeAttribute("aria-busy");
    }
  }

  form.addEventListener("submit", submit);
  input.addEventListener("input", () => setError(""));
  return { load };
}
