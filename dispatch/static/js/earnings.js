// earnings.js — the therapist's earnings, a section of the console (PROTOCOL.md §6).
//
// API
//   initEarnings({token, announce, showView, currentView, baseView}) -> {open, back, refresh}
//     Wires console.html's "Earnings" button (#earnings-open, hidden until this
//     runs) and its <section id="view-earnings">. The arguments are as for
//     initProfile (profile.js), token() giving the current token on each call,
//     plus baseView() -> the console view "Back" returns to (list, confirm, call).
//     open() loads what is available, being withdrawn and paid out
//     (`GET /v1/earnings`), the withdrawals (`GET /v1/withdrawals`) with their
//     state and payout date in words, and the ledger entries
//     (`GET /v1/transactions`), and shows the section.
//
// The "Withdraw" form asks for all that is available unless the therapist
// types another amount; the amount is read as text into minor units (never a
// float) and sent as `POST /v1/withdrawals {"amount_minor"}`. The page's
// checks are help only: the server decides, and its refusals are put in words
// beside the amount (aria-invalid, aria-describedby).
//
// Everything from the server reaches the page as text, never as HTML.
//
// Test hooks (data-testid): earnings-open, earnings-view, earnings-available,
// earnings-withdrawing, earnings-paid, earnings-error, withdraw-form,
// withdraw-amount, withdraw-submit, withdraw-error, withdraw-status,
// withdraw-none, withdrawal-list, withdrawal-item (data-state),
// withdrawal-state, withdrawal-payout, transaction-list, transaction-item
// (data-kind).

import { BACK_WORDS, el, failureText } from "./dom.js";
import { httpRequest } from "./protocol.js";
import {
  amountText,
  currencySymbol,
  formatMoney,
  formatWhen,
  parseAmount,
  transactionWords,
  withdrawalWords,
} from "./money.js";

const $ = (id) => document.getElementById(id);

/** How many ledger entries the section lists (the newest). */
const TRANSACTIONS_SHOWN = 100;

export function initEarnings({ token, announce, showView, currentView, baseView = () => "list" }) {
  const ui = {
    open: $("earnings-open"),
    view: $("view-earnings"),
    title: $("earnings-title"),
    back: $("earnings-back"),
    loading: $("earnings-loading"),
    error: $("earnings-error"),
    available: $("earnings-available"),
    withdrawing: $("earnings-withdrawing"),
    paid: $("earnings-paid"),
    form: $("withdraw-form"),
    amount: $("withdraw-amount"),
    amountLabel: $("withdraw-amount-label"),
    amountError: $("withdraw-error"),
    submit: $("withdraw-submit"),
    status: $("withdraw-status"),
    none: $("withdraw-none"),
    withdrawals: $("withdrawal-list"),
    withdrawalsEmpty: $("withdrawal-empty"),
    transactions: $("transaction-list"),
    transactionsEmpty: $("transaction-empty"),
    transactionsMore: $("transaction-more"),
  };
  const state = {
    currency: "GBP",
    earnings: null, // GET /v1/earnings as last answered
    typed: false, // the amount was typed: a reload does not overwrite it
    loading: null,
    withdrawing: false,
  };

  const api = (method, path, body) => httpRequest(token(), method, path, body);
  const money = (minor, options) => formatMoney(minor, state.currency, options);

  function showError(text) {
    ui.error.textContent = text || "";
    ui.error.hidden = !text;
  }

  function setAmountError(text) {
    ui.amountError.textContent = text;
    ui.amountError.hidden = false;
    ui.amount.setAttribute("aria-invalid", "true");
  }

  function clearAmountError() {
    ui.amountError.textContent = "";
    ui.amountError.hidden = true;
    ui.amount.removeAttribute("aria-invalid");
  }

  // -- rendering ------------------------------------------------------------------------

  function renderTotals(e) {
    ui.available.textContent = money(e.available_minor);
    ui.withdrawing.textContent = money(e.withdrawing_minor);
    ui.paid.textContent = money(e.paid_out_minor);
    const symbol = currencySymbol(state.currency);
    ui.amountLabel.textContent = `Amount to withdraw (${symbol === state.currency ? symbol : `${state.currency}, ${symbol}`})`;
    const available = Number(e.available_minor) || 0;
    ui.form.hidden = available <= 0;
    ui.none.hidden = available > 0;
    if (!state.typed) ui.amount.value = available > 0 ? amountText(available, state.currency) : "";
  }

  function renderWithdrawals(list) {
    ui.withdrawals.replaceChildren();
    for (const w of list) {
      const words = withdrawalWords(w);
      ui.withdrawals.append(
        el(
          "li",
          { className: "qc-money-item", "data-testid": "withdrawal-item", "data-state": w.state },
          el(
            "p",
            { className: "qc-money-row" },
            el("strong", { className: "qc-money-amount", text: money(w.amount_minor) }),
            el("span", {
              className: `qc-money-state qc-money-state-${w.state === "paid" ? "done" : "open"}`,
              "data-testid": "withdrawal-state",
              text: words.state,
            }),
          ),
          el("p", { className: "qc-money-meta", text: `Asked for ${formatWhen(w.created_at)}` }),
          words.payout
            ? el("p", { className: "qc-money-meta", "data-testid": "withdrawal-payout", text: words.payout })
            : null,
        ),
      );
    }
    ui.withdrawalsEmpty.hidden = list.length > 0;
  }

  function renderTransactions(list) {
    ui.transactions.replaceChildren();
    for (const t of list) {
      const amount = Number(t.amount_minor) || 0;
      ui.transactions.append(
        el(
          "li",
          { className: "qc-money-item", "data-testid": "transaction-item", "data-kind": t.kind },
          el(
            "p",
            { className: "qc-money-row" },
            el("span", { text: transactionWords(t.kind) }),
            el("strong", {
              className: `qc-money-amount ${amount < 0 ? "qc-money-out" : "qc-money-in"}`,
              text: money(amount, { signed: true }),
            }),
          ),
          el("p", {
            className: "qc-money-meta",
            text: `${formatWhen(t.created_at)}. Available after it: ${money(t.balance_after_minor)}`,
          }),
        ),
      );
    }
    ui.transactionsEmpty.hidden = list.length > 0;
    ui.transactionsMore.hidden = list.length < TRANSACTIONS_SHOWN;
  }

  // -- loading --------------------------------------------------------------------------

  async function load() {
    if (state.loading) return state.loading;
    ui.loading.hidden = false;
    showError("");
    state.loading = (async () => {
      const [earnings, withdrawals, transactions] = await Promise.allSettled([
        api("GET", "/v1/earnings"),
        api("GET", "/v1/withdrawals"),
        api("GET", `/v1/transactions?limit=${TRANSACTIONS_SHOWN}`),
      ]);
      const failed = [];
      if (earnings.status === "fulfilled" && earnings.value) {
        state.earnings = earnings.value;
        if (typeof earnings.value.currency === "string") state.currency = earnings.value.currency;
        renderTotals(earnings.value);
      } else {
        failed.push(earnings.reason);
      }
      if (withdrawals.status === "fulfilled") renderWithdrawals((withdrawals.value && withdrawals.value.withdrawals) || []);
      else failed.push(withdrawals.reason);
      if (transactions.status === "fulfilled") {
        renderTransactions((transactions.value && transactions.value.transactions) || []);
      } else {
        failed.push(transactions.reason);
      }
      if (failed.length) showError(failureText(failed[0], "Some of your earnings could not be loaded"));
      ui.loading.hidden = true;
      state.loading = null;
    })();
    return state.loading;
  }

  // -- withdrawing ------------------------------------------------------------------------

  async function withdraw(event) {
    event.preventDefault();
    if (state.withdrawing) return;
    clearAmountError();
    ui.status.textContent = "";
    const parsed = parseAmount(ui.amount.value, state.currency);
    if (parsed.error) {
      setAmountError(parsed.error);
      ui.amount.focus();
      return;
    }
    const available = state.earnings ? Number(state.earnings.available_minor) || 0 : null;
    if (available !== null && parsed.minor > available) {
      setAmountError(`You have ${money(available)} available; enter that or less.`);
      ui.amount.focus();
      return;
    }
    state.withdrawing = true;
    ui.submit.disabled = true;
    ui.submit.setAttribute("aria-busy", "true");
    ui.status.textContent = "Asking for the withdrawal…";
    try {
      const data = await api("POST", "/v1/withdrawals", { amount_minor: parsed.minor });
      const w = (data && data.withdrawal) || { amount_minor: parsed.minor };
      state.typed = false;
      await load();
      const words = `You asked to withdraw ${money(w.amount_minor)}. Send your invoice for it; its payout date is set when the invoice arrives.`;
      ui.status.textContent = words;
      announce(words);
      if (ui.form.hidden) ui.status.focus(); // the button is gone with the form: keep the focus near
    } catch (err) {
      ui.status.textContent = "";
      if (err.code === "insufficient_funds") {
        const left = typeof err.detail.available_minor === "number" ? err.detail.available_minor : null;
        setAmountError(
          left === null
            ? "Nothing was withdrawn: that is more than you have available."
            : `Nothing was withdrawn: you have only ${money(left)} available.`,
        );
        load();
      } else if (err.status === 422) {
        setAmountError(`Nothing was withdrawn: the service refused the amount (${err.message}).`);
      } else {
        setAmountError(failureText(err, "Nothing was withdrawn"));
      }
      ui.amount.focus();
    } finally {
      state.withdrawing = false;
      ui.submit.disabled = false;
      ui.submit.removeAttribute("aria-busy");
    }
  }

  // -- opening and closing ------------------------------------------------------------

  async function open() {
    if (!ui.view.isConnected) {
      ui.open.hidden = true; // signed out: the page's main content is gone
      return;
    }
    if (currentView() !== "earnings") {
      ui.back.textContent = BACK_WORDS[baseView()] || "Back";
      ui.status.textContent = "";
      clearAmountError();
      state.typed = false;
      showView("earnings");
    } else {
      ui.title.focus();
    }
    await load();
  }

  function back() {
    showView(baseView(), { focus: false });
    ui.open.focus();
  }

  ui.open.addEventListener("click", open);
  ui.back.addEventListener("click", back);
  ui.form.addEventListener("submit", withdraw);
  ui.amount.addEventListener("input", () => {
    state.typed = true;
    clearAmountError();
    ui.status.textContent = "";
  });
  ui.open.hidden = false;

  return { open, back, refresh: load };
}
