// The test payment page (served at /dev/checkout/{id} with `dispatch serve --dev`
// and no Stripe keys only; PROTOCOL.md §9). It stands in for Stripe Checkout:
// no money moves and no card is charged.
//
// Reads the checkout with GET /v1/wallet/checkout/{id} (the client's token from
// auth.js), shows its amount, and on "Pay" calls POST /dev/checkout/{id}/pay,
// which credits the wallet through the same step as Stripe's webhook, then goes
// to the URL it answers (/talk?topup=done&checkout_id=...). "Cancel" goes back to
// /talk?topup=cancelled, as Stripe's cancel URL would.
//
// Test hooks: data-testid="checkout-amount", "checkout-state", "checkout-pay",
// "checkout-cancel", "error-message", "test-payment-banner".

import { signIn } from "./auth.js";

const $ = (id) => document.getElementById(id);
const CANCEL_URL = "/talk?topup=cancelled";

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

/** "£12.50" for 1250 minor units of GBP (the currency's own decimals). */
function formatAmount(amountMinor, currency) {
  try {
    const format = new Intl.NumberFormat(undefined, { style: "currency", currency });
    const digits = format.resolvedOptions().maximumFractionDigits ?? 2;
    return format.format(amountMinor / 10 ** digits);
  } catch {
    return `${amountMinor} (minor units of ${currency})`;
  }
}

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

function errorText(response, data, fallback) {
  const err = (data && data.error) || {};
  return err.message || `${fallback} (HTTP ${response.status}).`;
}

function checkoutId() {
  const parts = window.location.pathname.split("/").filter(Boolean);
  return decodeURIComponent(parts[parts.length - 1] || "");
}

function showCheckout(checkout) {
  const amount = $("amount");
  amount.textContent = formatAmount(checkout.amount_minor, checkout.currency);
  amount.removeAttribute("aria-busy");
  const state = $("state");
  if (checkout.state === "open") {
    state.textContent = "Not paid yet.";
    $("pay").disabled = false;
  } else if (checkout.state === "paid") {
    state.textContent = "Already paid: the amount is in the wallet.";
  } else {
    state.textContent = "This checkout has expired and can no longer be paid.";
  }
}

async function main() {
  $("cancel").addEventListener("click", () => window.location.assign(CANCEL_URL));
  const session = signIn({ role: "client" });
  if (!session) return;
  const id = checkoutId();
  const headers = { Authorization: `Bearer ${session.token}` };
  const path = encodeURIComponent(id);

  const response = await fetch(`/v1/wallet/checkout/${path}`, { headers });
  const data = await readJson(response);
  if (!response.ok || !data) {
    $("amount").textContent = "—";
    showError(errorText(response, data, "This checkout could not be found"));
    return;
  }
  showCheckout(data);

  $("pay").addEventListener("click", async () => {
    const button = $("pay");
    button.disabled = true;
    showError("");
    document.body.setAttribute("aria-busy", "true");
    try {
      const paid = await fetch(`/dev/checkout/${path}/pay`, { method: "POST", headers });
      const result = await readJson(paid);
      if (!paid.ok || !result || typeof result.url !== "string") {
        showError(errorText(paid, result, "The test payment failed"));
        button.disabled = false;
        return;
      }
      announce("Test payment done. Going back.");
      window.location.assign(result.url);
    } finally {
      document.body.removeAttribute("aria-busy");
    }
  });
}

main().catch((error) => showError(`Something went wrong: ${error}`));
