// find.js — the directory at /find: therapists who match what a client asks
// for, best first, each with its next open time, its price and a link to its
// booking page (PROTOCOL.md §8 and the directory extension
// `GET /v1/therapists?region=&language=&topics=a,b`; an ES module, no build step).
//
// An operator may use it too, to book on a client's behalf: its links carry
// `?client=` when the page was opened with one.
//
// Test hooks (data-testid): find-form, find-topic-<topic>, find-region,
// find-language, find-submit, find-status, find-results, find-therapist
// (data-therapist-id), find-book.

import { signIn, signOut } from "./auth.js";
import { el, failureText } from "./dom.js";
import { httpRequest } from "./protocol.js";
import { formatMoney } from "./money.js";
import { whenWords } from "./when.js";

const $ = (id) => document.getElementById(id);
const state = { token: "", currency: "GBP", client: "" };

function announce(text) {
  $("live").textContent = "";
  window.setTimeout(() => {
    $("live").textContent = text;
  }, 50);
}

function nextSlotWords(t) {
  const slot = t.next_slot;
  const iso = slot && typeof slot === "object" ? slot.start : slot;
  const ms = Date.parse(iso);
  return Number.isNaN(ms) ? "No open times in the coming weeks" : `Next open time: ${whenWords(ms)}`;
}

function card(t) {
  const href = `/book/${encodeURIComponent(t.id)}${state.client ? `?client=${encodeURIComponent(state.client)}` : ""}`;
  const price = typeof t.session_price_minor === "number" ? `${formatMoney(t.session_price_minor, state.currency)} a session` : "";
  const facts = [
    Array.isArray(t.topics) && t.topics.length ? `Works with: ${t.topics.join(", ")}` : "",
    price,
    t.accepting_new_clients === false ? "Not taking new clients just now" : "",
  ].filter(Boolean);
  return el(
    "li",
    { className: "qc-bk-therapist", "data-testid": "find-therapist", "data-therapist-id": t.id },
    el("h3", { text: t.name || t.id }),
    t.bio ? el("p", { text: t.bio }) : null,
    el("p", { className: "qc-bk-meta", text: facts.join(". ") }),
    el("p", { className: "qc-bk-meta", text: nextSlotWords(t) }),
    el(
      "p",
      { className: "qc-actions" },
      el("a", { href, "data-testid": "find-book", text: `See times and book with ${t.name || t.id}` }),
    ),
  );
}

async function find(event) {
  event.preventDefault();
  const topics = [...document.querySelectorAll('#topics input[name="topics"]:checked')].map((i) => i.value);
  const q = new URLSearchParams({ region: $("region").value, language: $("language").value });
  if (topics.length) q.set("topics", topics.join(","));
  const status = $("results-status");
  status.textContent = "Looking…";
  $("find").setAttribute("aria-busy", "true");
  try {
    const data = await httpRequest(state.token, "GET", `/v1/therapists?${q}`);
    const list = (data && data.therapists) || [];
    $("results").replaceChildren(...list.map(card));
    status.textContent = list.length
      ? `${list.length} ${list.length === 1 ? "therapist matches" : "therapists match"}, best match first.`
      : "No therapist matches that yet. Try fewer topics, or talk to someone now.";
    announce(status.textContent);
    $("results-title").focus();
  } catch (err) {
    status.textContent = failureText(err, "The search failed");
  } finally {
    $("find").removeAttribute("aria-busy");
  }
}

function main() {
  const signed = signIn();
  if (!signed) return;
  state.token = signed.token;
  $("who").textContent = signed.claims.name || signed.claims.sub;
  $("sign-out").addEventListener("click", () => signOut());
  state.client = signed.claims.role === "operator" ? new URLSearchParams(location.search).get("client") || "" : "";
  if (signed.claims.role !== "client") $("talk-link").hidden = true;
  $("find-form").addEventListener("submit", find);
  if (signed.claims.role === "client") {
    httpRequest(state.token, "GET", "/v1/wallet").then(
      (w) => {
        if (w && typeof w.currency === "string") state.currency = w.currency;
      },
      () => {},
    );
  }
}

main();
