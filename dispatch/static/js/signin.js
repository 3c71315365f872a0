// The development sign-in page (served at / with `dispatch serve --dev` only).
//
// Lists the demo users from GET /dev/users grouped by role, offers a form for
// any other id/name/role, and on a choice mints a token with POST /dev/token
// and opens the role's page with the token in the URL fragment:
//   therapist -> /console#token=...   client -> /talk#token=...   operator -> /ops#token=...
//
// Test hooks: buttons data-testid="signin-user" with data-user-id (and data-role);
// the custom form's signin-custom-form, -id, -name, -role, -submit.

const PAGE_OF_ROLE = { therapist: "/console", client: "/talk", operator: "/ops" };
const ROLES = ["therapist", "client", "operator"];

const $ = (id) => document.getElementById(id);

function announce(text) {
  const live = $("live");
  live.textContent = "";
  window.setTimeout(() => {
    live.textContent = text;
  }, 50);
}

function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.hidden = !text;
}

function fieldError(field, text) {
  const p = $(`err-${field}`);
  if (!p) return false;
  p.textContent = text;
  p.hidden = !text;
  const input = document.querySelector(`#custom-form [name="${field}"]`);
  if (input) {
    if (text) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }
  return true;
}

function clearErrors() {
  showError("");
  for (const f of ["sub", "name", "role"]) fieldError(f, "");
}

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

/** Mint a token for {role, sub, name?} and go to the role's page. */
async function signIn(role, sub, name, button) {
  clearErrors();
  if (button) button.disabled = true;
  document.body.setAttribute("aria-busy", "true");
  try {
    const body = { role, sub };
    if (name) body.name = name;
    const response = await fetch("/dev/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const data = await readJson(response);
    if (!response.ok || !data || typeof data.token !== "string") {
      const err = (data && data.error) || {};
      const message = err.message || `Sign-in failed (HTTP ${response.status}).`;
      if (err.field) fieldError(err.field, message);
      showError(message);
      announce("Sign-in failed.");
      return;
    }
    announce(`Signed in as ${sub}. Opening the page.`);
    const page = PAGE_OF_ROLE[role] || "/talk";
    window.location.assign(`${page}#token=${encodeURIComponent(data.token)}`);
  } catch {
    showError("Could not reach the server. Is it running?");
  } finally {
    if (button) button.disabled = false;
    document.body.removeAttribute("aria-busy");
  }
}

function userButton(user) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "qc-user";
  button.dataset.testid = "signin-user";
  button.dataset.userId = user.id;
  button.dataset.role = user.role;
  const name = document.createElement("span");
  name.className = "qc-user-name";
  name.textContent = user.name || user.id;
  const id = document.createElement("span");
  id.className = "qc-user-id";
  id.textContent = user.id;
  button.append(name, id);
  button.setAttribute("aria-label", `Sign in as ${user.name || user.id} (${user.role}, ${user.id})`);
  button.addEventListener("click", () => signIn(user.role, user.id, user.name || "", button));
  li.append(button);
  return li;
}

async function loadUsers() {
  const groups = $("users");
  try {
    const response = await fetch("/dev/users", { headers: { Accept: "application/json" } });
    const data = await readJson(response);
    if (!response.ok || !data || !Array.isArray(data.users)) {
      showError(
        response.status === 404
          ? "The demo sign-in is only available when the server runs with --dev."
          : `Could not load the demo users (HTTP ${response.status}).`,
      );
      return;
    }
    for (const role of ROLES) {
      const list = $(`list-${role}`);
      list.replaceChildren(...data.users.filter((u) => u.role === role).map(userButton));
      if (!list.children.length) {
        const li = document.createElement("li");
        li.className = "qc-muted";
        li.textContent = "None.";
        list.append(li);
      }
    }
  } catch {
    showError("Could not reach the server. Is it running?");
  } finally {
    groups.removeAttribute("aria-busy");
  }
}

function onCustomSubmit(event) {
  event.preventDefault();
  clearErrors();
  const sub = $("custom-id").value.trim();
  const name = $("custom-name").value.trim();
  const role = $("custom-role").value;
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(sub)) {
    fieldError("sub", "Enter an id of 1 to 64 letters, digits, dots, dashes or underscores.");
    $("custom-id").focus();
    return;
  }
  const button = event.submitter || document.querySelector('[data-testid="signin-custom-submit"]');
  signIn(role, sub, name, button);
}

$("custom-form").addEventListener("submit", onCustomSubmit);
loadUsers();
