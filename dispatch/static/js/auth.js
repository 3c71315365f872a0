// auth.js — the page's bearer token (no build step; an ES module).
//
// API
//   getToken() -> string | null
//       The token from the URL fragment `#token=...` (then kept in
//       sessionStorage and removed from the address bar, so it is not
//       bookmarked or shared), else the one kept in sessionStorage.
//   decodeClaims(token) -> {sub, role, name, exp, ...} | null
//       The JWT's claims, NOT verified (the server verifies): only to show
//       the user's name and role. null when the token cannot be read.
//   isExpired(claims, nowMs = Date.now()) -> boolean
//   signIn({role?}) -> {token, claims} | null
//       getToken + decodeClaims; when there is no usable token (none,
//       unreadable, expired, or not of `role`) it shows the signed-out
//       message (below) and returns null.
//   signOut()
//       Forgets the token and shows the signed-out message.
//   forgetToken()
//       Forgets the token only.
//   keepToken(conn, onToken?)
//       Keeps the token a Connection renewed (its "token" event, PROTOCOL.md
//       §11) in sessionStorage, so a reload signs in with it; onToken(token)
//       lets the page use it for its own HTTP calls too.
//   showSignedOut(message?, {container?})
//       Replaces the page's <main> (or `container`, or <body>) with a clear
//       "you are not signed in" message (data-testid="signed-out") and a link
//       to `/` (the development sign-in page; in production the embedding
//       platform signs people in). Also hides a #sign-out button and sets
//       every .qc-conn status to "Signed out" (data-state="signed_out").

const STORAGE_KEY = "qc.token";

function storage() {
  try {
    return globalThis.sessionStorage ?? null;
  } catch {
    return null; // storage disabled by the browser
  }
}

/** The token from `#token=...` or sessionStorage, or null. */
export function getToken() {
  const loc = globalThis.location;
  if (loc && loc.hash && loc.hash.length > 1) {
    const params = new URLSearchParams(loc.hash.slice(1));
    const fromHash = params.get("token");
    if (fromHash) {
      storage()?.setItem(STORAGE_KEY, fromHash);
      params.delete("token");
      const rest = params.toString();
      const url = loc.pathname + loc.search + (rest ? `#${rest}` : "");
      try {
        globalThis.history?.replaceState(globalThis.history.state, "", url);
      } catch {
        // not fatal: the token just stays visible in the address bar
      }
      return fromHash;
    }
  }
  return storage()?.getItem(STORAGE_KEY) || null;
}

function base64UrlDecode(part) {
  const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
  const padded = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
  const binary = atob(padded);
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

/** The token's claims, without verifying its signature; null if unreadable. */
export function decodeClaims(token) {
  if (typeof token !== "string") return null;
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const claims = JSON.parse(base64UrlDecode(parts[1]));
    return claims && typeof claims === "object" && !Array.isArray(claims) ? claims : null;
  } catch {
    return null;
  }
}

/** Whether the claims' `exp` (seconds since the epoch) has passed. */
export function isExpired(claims, nowMs = Date.now()) {
  return !claims || typeof claims.exp !== "number" || claims.exp * 1000 <= nowMs;
}

/** Forget the token (sessionStorage) without touching the page. */
export function forgetToken() {
  storage()?.removeItem(STORAGE_KEY);
}

/** Keep each token `conn` renews in sessionStorage (and tell `onToken`). */
export function keepToken(conn, onToken) {
  return conn.on("token", ({ token }) => {
    storage()?.setItem(STORAGE_KEY, token);
    onToken?.(token);
  });
}

/** Forget the token and show the signed-out message. */
export function signOut() {
  forgetToken();
  showSignedOut("You have signed out.");
}

/**
 * Replace the page's main content with a clear signed-out message and a link
 * to the sign-in page. Built with DOM calls (never innerHTML).
 */
export function showSignedOut(message = "You are not signed in.", { container } = {}) {
  const doc = globalThis.document;
  if (!doc) return;
  const target = container || doc.getElementById("main") || doc.querySelector("main") || doc.body;
  const box = doc.createElement("section");
  box.className = "qc-view qc-signedout";
  box.setAttribute("data-testid", "signed-out");
  box.setAttribute("role", "alert");
  const h = doc.createElement("h2");
  h.textContent = "You are not signed in";
  const p = doc.createElement("p");
  p.textContent = message;
  const p2 = doc.createElement("p");
  p2.textContent = "Open this page again from the app you use, or ";
  const a = doc.createElement("a");
  a.href = "/";
  a.textContent = "sign in";
  p2.append(a, ".");
  box.append(h, p, p2);
  target.replaceChildren(box);
  if (target.hidden) target.hidden = false;
  // The page's header: no "Sign out" and no "Connecting…" any more.
  const signOutButton = doc.getElementById("sign-out");
  if (signOutButton) signOutButton.hidden = true;
  for (const conn of doc.querySelectorAll(".qc-conn")) {
    conn.dataset.state = "signed_out";
    conn.textContent = "Signed out";
  }
  a.focus?.();
}

/**
 * The page's token and claims, or null after showing the signed-out message
 * (no token, unreadable, expired, or not of the wanted role).
 */
export function signIn({ role } = {}) {
  const token = getToken();
  if (!token) {
    showSignedOut("This page needs you to sign in first.");
    return null;
  }
  const claims = decodeClaims(token);
  if (!claims || typeof claims.sub !== "string") {
    forgetToken();
    showSignedOut("Your sign-in could not be read. Please sign in again.");
    return null;
  }
  if (isExpired(claims)) {
    forgetToken();
    showSignedOut("Your sign-in has expired. Please sign in again.");
    return null;
  }
  if (role && claims.role !== role) {
    showSignedOut(
      `This page is for the ${role} role, but you are signed in as ${claims.role || "someone else"}.`,
    );
    return null;
  }
  return { token, claims };
}
