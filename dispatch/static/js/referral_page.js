// referral_page.js — the page of a therapist's share link, /r/<code>
// (PROTOCOL.md §10): keep the code in this browser (referral.js) and go on to
// /talk, which links the client to that therapist once it is signed in.

import { rememberCode } from "./referral.js";

const code = decodeURIComponent(window.location.pathname.replace(/^\/r\//, "").split("/")[0] || "");
rememberCode(code);
// The fragment goes along: an embedding platform may pass the token in it.
window.location.replace(`/talk${window.location.hash}`);
