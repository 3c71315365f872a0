// mydata.js — "Download my data" on /talk and /console (PROTOCOL.md §10):
// fetches `GET /v1/me/export` with the page's sign-in (the bearer token, so
// not a plain link) and saves it as `dispatch-export-<id>.json`. What the
// file holds is the server's choice (everything held about the caller); the
// page keeps no copy.
//
// API
//   initMyData(conn) -> {download()}  (wires #mydata and #mydata-status)
//
// Test hooks (data-testid): mydata-download, mydata-status.

import { failureText } from "./dom.js";

const $ = (id) => document.getElementById(id);

/** Save ``text`` as a file named ``name`` (a download, never a new page). */
function save(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  window.setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export function initMyData(conn) {
  const button = $("mydata");
  const status = $("mydata-status");
  if (!button) return { download: async () => {} };
  button.hidden = false;

  function say(text) {
    if (!status) return;
    status.textContent = text;
    status.hidden = !text;
  }

  async function download() {
    button.disabled = true;
    say("Preparing your data…");
    try {
      const data = await conn.http("GET", "/v1/me/export");
      const id = (data && data.user && data.user.id) || "me";
      save(`dispatch-export-${id}.json`, JSON.stringify(data, null, 2));
      say("Your data has been downloaded.");
    } catch (err) {
      say(failureText(err, "Your data could not be downloaded"));
    } finally {
      button.disabled = false;
    }
  }

  button.addEventListener("click", download);
  return { download };
}
