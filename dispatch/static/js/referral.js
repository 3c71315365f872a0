// referral.js — referral codes on the pages (PROTOCOL.md §10; an ES module, no
// build step). A therapist shares its link, /r/<code>; that page keeps the code
// in this browser and goes on to /talk, which links the client once signed in.
//
// API
//   rememberCode(code)       keep a share link's code (localStorage) until used
//   storedCode() -> string   the kept code, "" when none
//   linkStoredCode({token, show}) -> Promise<boolean>
//       POST /v1/me/referral once with the kept code, then forget it (also
//       when refused: a wrong code is not retried on every visit); show(text,
//       isError) tells the person how it went. False when there was no code.
//   initReferralShare({token, announce})
//       the console's "Your referral link": GET /v1/me/referral on asking,
//       the code and the absolute link, and a "Copy link" button.
//
// Test hooks (data-testid): referral-show, referral-code, referral-link,
// referral-copy, referral-status; on /talk: referral-result.

import { failureText } from "./dom.js";
import { httpRequest } from "./protocol.js";

const KEY = "qc.referral";
const CODE_RE = /^[A-Za-z0-9]{1,32}$/;
const $ = (id) => document.getElementById(id);

function store() {
  try {
    return window.localStorage;
  } catch {
    return null; // storage blocked: the link still opens /talk, unlinked
  }
}

export function rememberCode(code) {
  if (typeof code === "string" && CODE_RE.test(code)) store()?.setItem(KEY, code.toUpperCase());
}

export function storedCode() {
  return store()?.getItem(KEY) || "";
}

function forget() {
  store()?.removeItem(KEY);
}

/** The words for a refused link, by the protocol's error code. */
function refusal(err) {
  if (err.status === 404) return "That referral link is not valid: no therapist has its code.";
  if (err.status === 409) return "You are already linked with another therapist, so the referral link was not used.";
  if (err.status === 422) return "That referral link is not valid: its code is malformed.";
  if (err.status === 403) return "Referral links are for clients: nothing was linked.";
  return failureText(err, "The referral link could not be used");
}

export async function linkStoredCode({ token, show }) {
  const code = storedCode();
  if (!code) return false;
  try {
    const linked = await httpRequest(token(), "POST", "/v1/me/referral", { code });
    forget();
    const who = linked.therapist_name || "your therapist";
    show(`You are linked with ${who}. Your requests to talk go to them first.`, false);
  } catch (err) {
    // Network trouble and a service hiccup keep the code for the next visit.
    if (err.code !== "network" && err.status !== 503 && err.status !== 401) forget();
    show(refusal(err), true);
  }
  return true;
}

export function initReferralShare({ token, announce }) {
  const ui = {
    show: $("referral-show"),
    box: $("referral-box"),
    code: $("referral-code"),
    link: $("referral-link"),
    copy: $("referral-copy"),
    status: $("referral-status"),
  };
  if (!ui.show) return;
  let busy = false;

  ui.show.addEventListener("click", async () => {
    if (busy) return;
    busy = true;
    ui.status.textContent = "Loading your referral link…";
    try {
      const got = await httpRequest(token(), "GET", "/v1/me/referral");
      ui.code.textContent = got.code;
      ui.link.value = new URL(got.link, window.location.origin).href;
      ui.box.hidden = false;
      ui.show.hidden = true;
      ui.status.textContent = "";
      ui.link.focus();
      ui.link.select();
    } catch (err) {
      ui.status.textContent = failureText(err, "Your referral link could not be loaded");
    } finally {
      busy = false;
    }
  });

  ui.copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(ui.link.value);
      announce("Referral link copied.");
      ui.status.textContent = "Copied.";
    } catch {
      ui.link.focus();
      ui.link.select();
      ui.status.textContent = "Copying is blocked here: the link is selected, copy it with your keyboard.";
    }
  });
}
