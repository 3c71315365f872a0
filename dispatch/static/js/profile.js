// profile.js — the therapist's own profile, a section of the console (PROTOCOL.md §7).
//
// API
//   initProfile({token, therapistId, announce, showView, currentView}) -> {open, back}
//     Wires console.html's "Profile" button (#profile-open, hidden until this
//     runs) and its <section id="view-profile">.
//       token()           -> the current bearer token (renewed ones included)
//       therapistId       the signed-in therapist's id
//       announce(text)    a polite screen-reader announcement
//       showView(name, {focus})  console.js's view switch ("profile", "list", ...)
//       currentView()     -> the view shown now
//     open() loads `GET /v1/therapists/{id}` into the form (unless the form
//     holds unsaved changes) and shows the section; back() returns to the view
//     it was opened from. A claim or a call that starts meanwhile switches the
//     view away by itself (console.js's showView).
//
// Saving sends only the fields that differ from the profile as last loaded,
// in one `PATCH /v1/therapists/{id}`; the server checks everything (the page's
// checks are help only) and stores nothing when a field is refused: its
// message goes beside that field (aria-invalid, aria-describedby). The photo
// goes up on its own (`PUT .../photo`, the file as the body). Credentials
// (regions, languages, topics, minors) are shown read-only.
//
// Everything from the server or the user reaches the page as text (value,
// textContent), never as HTML.
//
// Test hooks (data-testid): profile-open, profile-view, profile-name,
// profile-bio, profile-phone, profile-email, profile-sms, profile-timezone,
// profile-quiet-from, profile-quiet-to, profile-quiet-none, profile-accepting,
// profile-save, profile-saved, profile-photo-input, profile-photo-preview,
// profile-photo-upload, profile-photo, profile-error, profile-missing.

import { httpRequest } from "./protocol.js";

const $ = (id) => document.getElementById(id);

/** The photo size the server takes (PROTOCOL.md §7), for a hint before uploading. */
const PHOTO_MAX_BYTES = 2 * 1024 * 1024;
const PHOTO_TYPES = ["image/jpeg", "image/png"];

/** The profile fields the form edits, in the order they appear. */
const EDITABLE = [
  "name",
  "bio",
  "phone",
  "email",
  "sms_opt_in",
  "timezone",
  "quiet_hours",
  "accepting_new_clients",
];

function deviceTimeZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || null;
  } catch {
    return null;
  }
}

function allTimeZones() {
  try {
    return typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : null;
  } catch {
    return null;
  }
}

function clockIn(zone) {
  try {
    return new Date().toLocaleTimeString([], { timeZone: zone, hour: "2-digit", minute: "2-digit" });
  } catch {
    return null; // not a zone this browser knows
  }
}

function displayName(type, code) {
  try {
    return new Intl.DisplayNames(["en"], { type }).of(code) || code;
  } catch {
    return code;
  }
}

function listText(codes, name) {
  if (!Array.isArray(codes) || codes.length === 0) return "None";
  return codes
    .map((code) => {
      const words = name(code);
      return words && words !== code ? `${words} (${code})` : code;
    })
    .join(", ");
}

/** A photo URL the page may show: same origin, or https. */
function safePhotoUrl(url) {
  if (typeof url !== "string" || url === "") return null;
  if (url.startsWith("/") && !url.startsWith("//")) return url;
  return url.startsWith("https://") ? url : null;
}

export function initProfile({ token, therapistId, announce, showView, currentView }) {
  const path = `/v1/therapists/${encodeURIComponent(therapistId)}`;
  const ui = {
    open: $("profile-open"),
    view: $("view-profile"),
    title: $("profile-title"),
    back: $("profile-back"),
    loading: $("profile-loading"),
    missing: $("profile-missing"),
    error: $("profile-error"),
    form: $("profile-form"),
    name: $("profile-name"),
    bio: $("profile-bio"),
    photo: $("profile-photo"),
    photoNone: $("profile-photo-none"),
    photoInput: $("profile-photo-input"),
    previewBox: $("profile-photo-preview-box"),
    preview: $("profile-photo-preview"),
    upload: $("profile-photo-upload"),
    photoStatus: $("profile-photo-status"),
    phone: $("profile-phone"),
    email: $("profile-email"),
    sms: $("profile-sms"),
    timezone: $("profile-timezone"),
    timezoneHint: $("profile-timezone-now"),
    deviceZone: $("profile-timezone-device"),
    quietNone: $("profile-quiet-none"),
    quietFrom: $("profile-quiet-from"),
    quietTo: $("profile-quiet-to"),
    accepting: $("profile-accepting"),
    credentials: $("profile-credentials"),
    save: $("profile-save"),
    saved: $("profile-saved"),
    status: $("profile-status"),
  };
  const state = {
    loaded: null, // the profile as the server last answered it
    returnTo: "list",
    loading: null, // the load under way
    saving: false,
    uploading: false,
    previewUrl: null,
  };

  // -- the time zone control: a <select> of every zone when the browser lists them

  const zones = allTimeZones();
  if (zones && zones.length) {
    for (const zone of zones) ui.timezone.append(new Option(zone.replaceAll("_", " "), zone));
  } else {
    const input = document.createElement("input");
    for (const attr of ["id", "data-testid", "aria-describedby", "class"]) {
      const value = ui.timezone.getAttribute(attr);
      if (value !== null) input.setAttribute(attr, value);
    }
    Object.assign(input, { type: "text", autocomplete: "off", spellcheck: false, placeholder: "Europe/London" });
    ui.timezone.replaceWith(input);
    ui.timezone = input;
  }

  /** Make sure a <select> can show `zone` (a stored or device zone it does not list). */
  function offerZone(zone) {
    if (!zone || ui.timezone.tagName !== "SELECT") return;
    if (![...ui.timezone.options].some((o) => o.value === zone)) {
      ui.timezone.prepend(new Option(zone.replaceAll("_", " "), zone));
    }
  }

  function renderZoneClock() {
    const zone = ui.timezone.value.trim();
    const now = zone ? clockIn(zone) : null;
    ui.timezoneHint.textContent = now ? `It is ${now} there now.` : "";
  }

  const device = deviceTimeZone();
  if (device) {
    ui.deviceZone.textContent = `Use this device's time zone (${device.replaceAll("_", " ")})`;
  } else {
    ui.deviceZone.hidden = true;
  }

  // -- field errors -------------------------------------------------------------

  /** The server's field names -> the controls that show them, and where their message goes. */
  const FIELDS = {
    name: { controls: [ui.name], error: $("profile-name-error") },
    bio: { controls: [ui.bio], error: $("profile-bio-error") },
    phone: { controls: [ui.phone], error: $("profile-phone-error") },
    email: { controls: [ui.email], error: $("profile-email-error") },
    sms_opt_in: { controls: [ui.sms], error: $("profile-sms-error") },
    timezone: { controls: [ui.timezone], error: $("profile-timezone-error") },
    quiet_hours: { controls: [ui.quietFrom, ui.quietTo], error: $("profile-quiet-error") },
    accepting_new_clients: { controls: [ui.accepting], error: $("profile-accepting-error") },
    photo: { controls: [ui.photoInput], error: $("profile-photo-error") },
  };

  const controlsOf = (field) => FIELDS[field].controls;

  function setFieldError(field, message) {
    const { error } = FIELDS[field];
    error.textContent = message;
    error.hidden = false;
    for (const control of controlsOf(field)) {
      control.setAttribute("aria-invalid", "true");
      const ids = (control.getAttribute("aria-describedby") || "").split(/\s+/).filter(Boolean);
      if (!ids.includes(error.id)) control.setAttribute("aria-describedby", [...ids, error.id].join(" "));
    }
  }

  function clearFieldError(field) {
    const { error } = FIELDS[field];
    error.textContent = "";
    error.hidden = true;
    for (const control of controlsOf(field)) {
      control.removeAttribute("aria-invalid");
      const ids = (control.getAttribute("aria-describedby") || "").split(/\s+/).filter((id) => id && id !== error.id);
      if (ids.length) control.setAttribute("aria-describedby", ids.join(" "));
      else control.removeAttribute("aria-describedby");
    }
  }

  function showError(text) {
    ui.error.textContent = text || "";
    ui.error.hidden = !text;
  }

  function clearAllErrors() {
    for (const field of Object.keys(FIELDS)) clearFieldError(field);
    showError("");
  }

  /** Words for a failed call: the server's own message, never a bare code. */
  function failureText(err, what) {
    if (err.status === 401) return "Your sign-in is no longer valid. Please sign in again.";
    if (err.code === "network") return `${what}: the server could not be reached. Try again.`;
    return `${what}: ${err.message}`;
  }

  // -- the form ---------------------------------------------------------------------

  function renderQuietInputs() {
    const none = ui.quietNone.checked;
    ui.quietFrom.disabled = none;
    ui.quietTo.disabled = none;
  }

  function renderPhoto(url) {
    const safe = safePhotoUrl(url);
    ui.photo.hidden = !safe;
    ui.photoNone.hidden = !!safe;
    ui.photoNone.textContent = "No photo yet";
    if (safe) ui.photo.src = safe;
    else ui.photo.removeAttribute("src");
  }

  function renderCredentials(p) {
    const rows = [
      ["Regions", listText(p.regions, (c) => displayName("region", String(c).split("-")[0]))],
      ["Languages", listText(p.languages, (c) => displayName("language", c))],
      ["Topics", Array.isArray(p.topics) && p.topics.length ? p.topics.join(", ") : "None"],
      ["Works with clients under 18", p.works_with_minors ? "Yes" : "No"],
    ];
    ui.credentials.replaceChildren();
    for (const [term, value] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      dd.textContent = value;
      ui.credentials.append(dt, dd);
    }
  }

  /** Put the server's values of `fields` (all by default) into the form. */
  function fill(p, fields = EDITABLE) {
    for (const field of fields) {
      switch (field) {
        case "name":
          ui.name.value = p.name ?? "";
          break;
        case "bio":
          ui.bio.value = p.bio ?? "";
          break;
        case "phone":
          ui.phone.value = p.phone ?? "";
          break;
        case "email":
          ui.email.value = p.email ?? "";
          break;
        case "sms_opt_in":
          ui.sms.checked = !!p.sms_opt_in;
          break;
        case "timezone":
          offerZone(p.timezone);
          ui.timezone.value = p.timezone ?? "";
          renderZoneClock();
          break;
        case "quiet_hours": {
          const [from, to] = typeof p.quiet_hours === "string" ? p.quiet_hours.split("-") : ["", ""];
          ui.quietNone.checked = !p.quiet_hours;
          ui.quietFrom.value = from || "";
          ui.quietTo.value = to || "";
          renderQuietInputs();
          break;
        }
        case "accepting_new_clients":
          ui.accepting.checked = p.accepting_new_clients !== false;
          break;
        default:
          break;
      }
    }
  }

  /** The form's values in the PATCH body's shape; `quiet_hours` is undefined when half given. */
  function formValues() {
    const from = ui.quietFrom.value;
    const to = ui.quietTo.value;
    let quiet = null;
    if (!ui.quietNone.checked) quiet = from && to ? `${from}-${to}` : undefined;
    return {
      name: ui.name.value,
      bio: ui.bio.value,
      phone: ui.phone.value.trim() || null,
      email: ui.email.value.trim() || null,
      sms_opt_in: ui.sms.checked,
      timezone: ui.timezone.value.trim(),
      quiet_hours: quiet,
      accepting_new_clients: ui.accepting.checked,
    };
  }

  /** The fields whose value differs from the profile as loaded. */
  function changes() {
    const loaded = state.loaded;
    if (!loaded) return {};
    const values = formValues();
    const out = {};
    for (const field of EDITABLE) {
      const before = loaded[field] ?? (field === "bio" ? "" : null);
      if (values[field] !== before) out[field] = values[field];
    }
    return out;
  }

  function showSaved(on) {
    ui.saved.hidden = !on;
    if (on) ui.status.textContent = "";
  }

  // -- loading ----------------------------------------------------------------------

  async function load() {
    if (state.loading) return state.loading;
    ui.loading.hidden = false;
    ui.loading.textContent = "Loading your profile…";
    showError("");
    state.loading = (async () => {
      try {
        const profile = await httpRequest(token(), "GET", path);
        state.loaded = profile;
        clearAllErrors();
        fill(profile);
        renderPhoto(profile.photo_url);
        renderCredentials(profile);
        ui.missing.hidden = true;
        ui.form.hidden = false;
      } catch (err) {
        if (err.status === 404) {
          state.loaded = null;
          ui.form.hidden = true;
          ui.missing.hidden = false;
        } else {
          showError(failureText(err, "Your profile could not be loaded"));
        }
      } finally {
        ui.loading.hidden = true;
        state.loading = null;
      }
    })();
    return state.loading;
  }

  // -- saving -----------------------------------------------------------------------

  async function save(event) {
    event.preventDefault();
    if (state.saving || !state.loaded) return;
    clearAllErrors();
    showSaved(false);
    const body = changes();
    if (body.quiet_hours === undefined && "quiet_hours" in body) {
      // Help, not a rule: a half-given range cannot be sent at all.
      setFieldError("quiet_hours", "Give both times, or tick “No quiet hours”.");
      (ui.quietFrom.value ? ui.quietTo : ui.quietFrom).focus();
      return;
    }
    if (Object.keys(body).length === 0) {
      ui.status.textContent = "Nothing to save: you have not changed anything.";
      return;
    }
    state.saving = true;
    ui.save.setAttribute("aria-busy", "true");
    ui.status.textContent = "Saving…";
    try {
      const profile = await httpRequest(token(), "PATCH", path, body);
      state.loaded = profile;
      // Only what was sent: something typed while saving stays as typed.
      fill(profile, Object.keys(body));
      showSaved(true);
    } catch (err) {
      ui.status.textContent = "";
      if (err.field && FIELDS[err.field]) {
        setFieldError(err.field, err.message);
        showError("Nothing was saved. Please look at the field marked below.");
        controlsOf(err.field).find((c) => !c.disabled)?.focus();
      } else if (err.status === 404) {
        showError("Nothing was saved: your profile no longer exists. Ask the service's operators.");
      } else {
        showError(failureText(err, "Nothing was saved"));
      }
    } finally {
      state.saving = false;
      ui.save.removeAttribute("aria-busy");
    }
  }

  // -- the photo --------------------------------------------------------------------

  function clearPreview() {
    if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
    state.previewUrl = null;
    ui.preview.removeAttribute("src");
    ui.previewBox.hidden = true;
  }

  function onPhotoChosen() {
    clearFieldError("photo");
    ui.photoStatus.textContent = "";
    clearPreview();
    const file = ui.photoInput.files && ui.photoInput.files[0];
    if (!file) return;
    state.previewUrl = URL.createObjectURL(file);
    ui.preview.src = state.previewUrl;
    ui.previewBox.hidden = false;
    // Help only: the server decides, and says why when it refuses.
    if (!PHOTO_TYPES.includes(file.type)) {
      setFieldError("photo", "This file is not a JPEG or PNG image; the service takes only those.");
    } else if (file.size > PHOTO_MAX_BYTES) {
      setFieldError("photo", "This photo is larger than 2 MiB, the most the service takes. Choose a smaller one.");
    } else {
      ui.photoStatus.textContent = "Not uploaded yet: press “Upload photo” to use it.";
    }
  }

  async function uploadPhoto() {
    if (state.uploading) return;
    const file = ui.photoInput.files && ui.photoInput.files[0];
    clearFieldError("photo");
    if (!file) {
      setFieldError("photo", "Choose a photo first.");
      ui.photoInput.focus();
      return;
    }
    state.uploading = true;
    ui.upload.setAttribute("aria-busy", "true");
    ui.photoStatus.textContent = "Uploading…";
    try {
      let response;
      try {
        response = await fetch(`${path}/photo`, {
          method: "PUT",
          headers: {
            Accept: "application/json",
            Authorization: `Bearer ${token()}`,
            "Content-Type": file.type || "application/octet-stream",
          },
          body: file,
          cache: "no-store",
        });
      } catch {
        ui.photoStatus.textContent = "";
        setFieldError("photo", "The photo was not uploaded: the server could not be reached. Try again.");
        return;
      }
      let data = null;
      try {
        data = await response.json();
      } catch {
        data = null;
      }
      if (!response.ok) {
        const message =
          response.status === 401
            ? "Your sign-in is no longer valid. Please sign in again."
            : data?.error?.message || `The server refused it (HTTP ${response.status}).`;
        ui.photoStatus.textContent = "";
        setFieldError("photo", `The photo was not uploaded: ${message}`);
        return;
      }
      // Only the photo: the rest of the form may hold edits not saved yet.
      if (state.loaded && data) state.loaded = { ...state.loaded, photo_url: data.photo_url };
      renderPhoto(data?.photo_url);
      clearPreview();
      ui.photoInput.value = "";
      ui.photoStatus.textContent = "Your new photo is uploaded. Clients see it from now on.";
    } finally {
      state.uploading = false;
      ui.upload.removeAttribute("aria-busy");
    }
  }

  // -- opening and closing ------------------------------------------------------------

  const BACK_WORDS = { call: "Back to the call", confirm: "Back", list: "Back to the requests" };

  async function open() {
    if (!ui.view.isConnected) {
      ui.open.hidden = true; // signed out: the page's main content is gone
      return;
    }
    if (currentView() !== "profile") {
      state.returnTo = currentView() || "list";
      ui.back.textContent = BACK_WORDS[state.returnTo] || "Back";
      showView("profile");
    } else {
      ui.title.focus();
    }
    showSaved(false);
    ui.status.textContent = "";
    // Keep unsaved edits across a trip back to the requests; else show what is stored.
    if (!state.loaded || Object.keys(changes()).length === 0) await load();
  }

  function back() {
    clearPreview();
    ui.photoInput.value = "";
    showView(state.returnTo || "list", { focus: false });
    ui.open.focus();
  }

  // -- wiring -------------------------------------------------------------------------

  ui.open.addEventListener("click", open);
  ui.back.addEventListener("click", back);
  ui.form.addEventListener("submit", save);
  ui.form.addEventListener("input", (event) => {
    if (event.target === ui.photoInput) return; // the photo is not part of "Save changes"
    showSaved(false);
    for (const field of Object.keys(FIELDS)) {
      if (field !== "photo" && controlsOf(field).includes(event.target)) clearFieldError(field);
    }
  });
  ui.quietNone.addEventListener("change", () => {
    if (!ui.quietNone.checked && !ui.quietFrom.value && !ui.quietTo.value) {
      // A usual night as a start; the therapist changes it as it likes.
      ui.quietFrom.value = "22:00";
      ui.quietTo.value = "07:00";
    }
    clearFieldError("quiet_hours");
    renderQuietInputs();
  });
  ui.timezone.addEventListener("change", renderZoneClock);
  ui.deviceZone.addEventListener("click", () => {
    if (!device) return;
    offerZone(device);
    ui.timezone.value = device;
    clearFieldError("timezone");
    showSaved(false);
    renderZoneClock();
    announce(`Time zone set to ${device.replaceAll("_", " ")}. Save to keep it.`);
  });
  ui.photoInput.addEventListener("change", onPhotoChosen);
  ui.upload.addEventListener("click", uploadPhoto);
  ui.photo.addEventListener("error", () => {
    ui.photo.hidden = true;
    ui.photoNone.hidden = false;
    ui.photoNone.textContent = "The photo could not be shown";
  });
  ui.open.hidden = false;

  return { open, back };
}
