// dom.js — the console's small DOM helpers (an ES module, no build step).
//
// API
//   el(tag, attrs, ...children) -> an element: attrs "className" and "text" are
//     properties, the rest attributes (true -> present, null/false -> absent);
//     children are nodes or strings (strings become text nodes)
//   failureText(err, what) -> a failed HTTP call in words, never a bare code
//   BACK_WORDS[view] -> what a section's "Back" button says, by the view it returns to

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "className") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

/** Words for a failed call: the server's own message, never a bare code. */
export function failureText(err, what) {
  if (err.status === 401) return "Your sign-in is no longer valid. Please sign in again.";
  if (err.code === "network") return `${what}: the server could not be reached. Try again.`;
  if (err.status === 503) return `${what}: the service is having trouble right now. Try again shortly.`;
  return `${what}: ${err.message}`;
}

/** "Back" returns to the console's own work (baseView), not to another section. */
export const BACK_WORDS = {
  list: "Back to the requests",
  confirm: "Back to the request",
  call: "Back to the call",
};
