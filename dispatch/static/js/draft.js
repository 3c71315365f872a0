// draft.js — what the client typed in the "talk now" form, kept in
// sessionStorage (an ES module, no build step).
//
// The form is left for the payment page (a top-up) and comes back in the same
// tab; a reload comes back too. sessionStorage belongs to this tab alone and
// goes with it, so the notes never outlive the visit.
//
// API
//   keepDraft(form) -> {restore(), clear()}
//     Saves the form's fields (checkboxes, selects, text) on every change;
//     restore() puts a kept draft back (and fires `input` on each field so the
//     page's counters follow); clear() forgets it (after "talk now" worked).

const KEY = "qc.talk.draft";

function fields(form) {
  return [...form.elements].filter((el) => el.id || el.name);
}

function keyOf(el) {
  return el.type === "checkbox" && el.name && !el.id ? `${el.name}=${el.value}` : el.id || el.name;
}

export function keepDraft(form) {
  const save = () => {
    const draft = {};
    for (const el of fields(form)) {
      if (el.type === "checkbox" || el.type === "radio") draft[keyOf(el)] = el.checked;
      else if ("value" in el && el.tagName !== "BUTTON") draft[keyOf(el)] = el.value;
    }
    try {
      sessionStorage.setItem(KEY, JSON.stringify(draft));
    } catch {
      // storage disabled or full: the draft is simply not kept
    }
  };
  form.addEventListener("input", save);
  form.addEventListener("change", save);

  return {
    restore() {
      let draft = null;
      try {
        draft = JSON.parse(sessionStorage.getItem(KEY) || "null");
      } catch {
        draft = null;
      }
      if (!draft || typeof draft !== "object") return false;
      for (const el of fields(form)) {
        const key = keyOf(el);
        if (!(key in draft)) continue;
        if (el.type === "checkbox" || el.type === "radio") el.checked = draft[key] === true;
        else if (el.tagName !== "BUTTON") el.value = String(draft[key] ?? "");
        el.dispatchEvent(new Event("input", { bubbles: true }));
      }
      return true;
    },
    clear() {
      try {
        sessionStorage.removeItem(KEY);
      } catch {
        // nothing kept
      }
    },
  };
}
