// protocol.js — the v1 protocol over a WebSocket and HTTP (an ES module, no build step).
//
// API
//   new Connection({token, url?, autoConnect = true, pingIntervalMs = 20000,
//                   pongTimeoutMs = 10000, requestTimeoutMs = 15000,
//                   backoffBaseMs = 500, backoffMaxMs = 8000,
//                   refreshToken = refreshTokenOverHttp, renewRetryMs = 5000})
//     Opens `/v1/ws` on this page's origin (ws: or wss:) with the
//     subprotocol `qc.v1.json`, sends the `auth` frame first, and keeps the
//     connection: an application `ping` every pingIntervalMs (no `pong` within
//     pongTimeoutMs counts as a drop), and after a drop a reconnect with
//     exponential backoff and jitter — but not after close code 4401 (bad
//     token) or 4408 (no auth in time): that is "signed out".
//     When the server says `auth.expiring` (PROTOCOL.md §11), it gets a new
//     token with refreshToken(oldToken) -> Promise<newToken>, sends it in an
//     `auth` frame and waits for `auth.ok`; the socket, and any call on it,
//     goes on. A failed refresh is tried again every renewRetryMs until the
//     old token runs out (then the server closes 4401: "signed out").
//   conn.ready: Promise<welcome frame>  resolved by the first `welcome`;
//     rejected (ProtocolError "unauthorized") when signed out before it.
//   conn.user: {id, role} | null         from the latest `welcome`.
//   conn.state: "idle" | "connecting" | "open" | "reconnecting" | "signed_out" | "closed"
//   conn.connect()                       (again) after autoConnect: false; returns ready.
//   conn.on(type, handler) -> off()      handler(frame) for a frame type
//     ("pool.snapshot", "request.new", ...; "*" for every frame; "error" for
//     error frames that answer no pending request()), or for a lifecycle event:
//       "open"         {welcome, reconnected}   after each successful `welcome`
//       "close"        {code, reason, willReconnect}
//       "reconnecting" {attempt, delayMs}
//       "signedout"    {code, reason}
//       "state"        {state}
//       "token"        {token}  a new token is in use (keep it: see auth.js keepToken)
//   conn.off(type, handler)
//   conn.send(frame) -> boolean          sends now if authenticated, else false.
//   conn.request(frame, {timeoutMs}) -> Promise<answer frame>
//     Gives the frame a fresh `ref` (unless it has one) and resolves with the
//     first frame that echoes it; rejects with a ProtocolError carrying the
//     `error` frame's code/message, or code "disconnected" / "timeout".
//   conn.http(method, path, body?, {headers}) -> Promise<json | null>
//     fetch() with `Authorization: Bearer`; a non-2xx answer throws a
//     ProtocolError from the protocol's {error: {code, message, ...}}.
//   conn.drop()   simulate a network drop (closes the socket; reconnects).
//   conn.close()  close for good (no reconnect).
//
//   class ProtocolError extends Error {code, status?, field?, ref?, detail}
//   httpRequest(token, method, path, body?, {headers}) — conn.http without a Connection.
//   refreshTokenOverHttp(token) -> Promise<token> — POST /v1/auth/refresh.
//   wsUrl(path = "/v1/ws") — ws(s)://<this origin><path>.
//   newId(prefix = "") — a random id of [A-Za-z0-9_.:-] (for client_msg_id, ref).
//   END_REASONS, describeEndReason(reason), formatDuration(seconds),
//   formatClock(seconds) — "m:ss"; secondsUntil(isoTime, nowMs?)

export const SUBPROTOCOL = "qc.v1.json";
export const CLOSE_UNAUTHORIZED = 4401;
export const CLOSE_AUTH_TIMEOUT = 4408;
const CLOSE_KEEPALIVE = 4000;

/** An `error` frame, an HTTP error body, or a local failure (disconnected, timeout). */
export class ProtocolError extends Error {
  constructor(code, message, extra = {}) {
    super(message || code);
    this.name = "ProtocolError";
    this.code = code;
    this.status = extra.status;
    this.field = extra.field;
    this.ref = extra.ref;
    this.detail = extra;
  }
}

/** The websocket URL for `path` on this page's origin. */
export function wsUrl(path = "/v1/ws") {
  const loc = globalThis.location;
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}${path}`;
}

/** A random id: `prefix` + 24 hex digits. */
export function newId(prefix = "") {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** `fetch` with the bearer token; throws ProtocolError on a non-2xx answer. */
export async function httpRequest(token, method, path, body, { headers = {} } = {}) {
  const init = {
    method,
    headers: { Accept: "application/json", Authorization: `Bearer ${token}`, ...headers },
    cache: "no-store",
  };
  if (body !== undefined && body !== null) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ProtocolError("network", "The server could not be reached.", { cause: err });
  }
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const err = (data && data.error) || {};
    throw new ProtocolError(err.code || `http_${response.status}`, err.message || `HTTP ${response.status}`, {
      ...err,
      status: response.status,
    });
  }
  return data;
}

/** A new token for the same user from `POST /v1/auth/refresh` (PROTOCOL.md §11). */
export async function refreshTokenOverHttp(token) {
  const data = await httpRequest(token, "POST", "/v1/auth/refresh");
  if (!data || typeof data.token !== "string") {
    throw new ProtocolError("bad_answer", "The sign-in could not be renewed.");
  }
  return data.token;
}

/** A websocket connection that authenticates, keeps alive and reconnects. */
export class Connection {
  constructor({
    token,
    url,
    autoConnect = true,
    pingIntervalMs = 20000,
    pongTimeoutMs = 10000,
    requestTimeoutMs = 15000,
    backoffBaseMs = 500,
    backoffMaxMs = 8000,
    refreshToken = refreshTokenOverHttp,
    renewRetryMs = 5000,
  } = {}) {
    if (!token) throw new TypeError("Connection needs a token");
    this.token = token;
    this.refreshToken = refreshToken;
    this.renewRetryMs = renewRetryMs;
    this._renewing = null; // the renewal under way, if any
    this._renewTimer = null;
    this.url = url || wsUrl();
    this.pingIntervalMs = pingIntervalMs;
    this.pongTimeoutMs = pongTimeoutMs;
    this.requestTimeoutMs = requestTimeoutMs;
    this.backoffBaseMs = backoffBaseMs;
    this.backoffMaxMs = backoffMaxMs;

    this.state = "idle";
    this.user = null;
    this.welcomes = 0; // how many times a `welcome` came (1 = first connect)
    this._ws = null;
    this._authed = false;
    this._handlers = new Map();
    this._pending = new Map(); // ref -> {resolve, reject, timer}
    this._refSeq = 0;
    this._attempt = 0;
    this._retryTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    this._closedForGood = false;

    this.ready = new Promise((resolve, reject) => {
      this._resolveReady = resolve;
      this._rejectReady = reject;
    });
    this.ready.catch(() => {}); // reported through "signedout" too
    this._onOnline = () => {
      if (this.state === "reconnecting" && this._retryTimer !== null) {
        clearTimeout(this._retryTimer);
        this._retryTimer = null;
        this._open();
      }
    };
    globalThis.addEventListener?.("online", this._onOnline);
    if (autoConnect) this.connect();
  }

  /** Open the socket (if not already); returns `ready`. */
  connect() {
    if (this._closedForGood || this.state === "signed_out") return this.ready;
    if (!this._ws) this._open();
    return this.ready;
  }

  on(type, handler) {
    let set = this._handlers.get(type);
    if (!set) {
      set = new Set();
      this._handlers.set(type, set);
    }
    set.add(handler);
    return () => this.off(type, handler);
  }

  off(type, handler) {
    this._handlers.get(type)?.delete(handler);
  }

  _emit(type, payload) {
    const set = this._handlers.get(type);
    if (!set) return;
    for (const handler of [...set]) {
      try {
        handler(payload);
      } catch (err) {
        console.error(`handler for ${type} failed`, err);
      }
    }
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", { state });
  }

  get isOpen() {
    return this._authed && this._ws !== null && this._ws.readyState === WebSocket.OPEN;
  }

  /** Send a frame now; false when not connected and authenticated. */
  send(frame) {
    if (!this.isOpen) return false;
    this._ws.send(JSON.stringify(frame));
    return true;
  }

  /** Send a frame and wait for the frame (or `error`) that echoes its ref. */
  request(frame, { timeoutMs = this.requestTimeoutMs } = {}) {
    const ref = frame.ref ?? `r${++this._refSeq}`;
    const out = { ...frame, ref };
    return new Promise((resolve, reject) => {
      if (!this.isOpen) {
        reject(new ProtocolError("disconnected", "Not connected to the server.", { ref }));
        return;
      }
      const timer = setTimeout(() => {
        this._pending.delete(ref);
        reject(new ProtocolError("timeout", "The server did not answer in time.", { ref }));
      }, timeoutMs);
      this._pending.set(ref, { resolve, reject, timer });
      this._ws.send(JSON.stringify(out));
    });
  }

  /** HTTP with this connection's token (see httpRequest). */
  http(method, path, body, options) {
    return httpRequest(this.token, method, path, body, options);
  }

  /** Simulate a network drop: the socket closes and the connection comes back. */
  drop() {
    if (!this._ws) return;
    this._lost(CLOSE_KEEPALIVE, "dropped by the page");
  }

  /** Close for good: no reconnect. */
  close() {
    this._closedForGood = true;
    globalThis.removeEventListener?.("online", this._onOnline);
    clearTimeout(this._renewTimer);
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._stopKeepalive();
    const ws = this._ws;
    this._ws = null;
    this._authed = false;
    if (ws) {
      this._detach(ws);
      try {
        ws.close(1000, "bye");
      } catch {
        // already closed
      }
    }
    this._failPending("disconnected", "The connection was closed.");
    this._setState("closed");
    this._emit("close", { code: 1000, reason: "closed by the page", willReconnect: false });
  }

  _open() {
    this._setState(this.welcomes > 0 || this._attempt > 0 ? "reconnecting" : "connecting");
    let ws;
    try {
      ws = new WebSocket(this.url, SUBPROTOCOL);
    } catch (err) {
      console.error("websocket could not be opened", err);
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    this._authed = false;
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: "auth", token: this.token }));
    };
    ws.onmessage = (event) => this._onMessage(ws, event);
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      this._lost(event.code, event.reason);
    };
    ws.onerror = () => {
      // a close event follows; nothing to do here
    };
  }

  _detach(ws) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
  }

  _onMessage(ws, event) {
    if (this._ws !== ws || typeof event.data !== "string") return;
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      console.error("an unreadable frame from the server was ignored");
      return;
    }
    if (!frame || typeof frame.type !== "string") return;
    if (frame.type === "welcome") {
      this._authed = true;
      this.user = frame.user || null;
      const reconnected = this.welcomes > 0;
      this.welcomes += 1;
      this._attempt = 0;
      this._setState("open");
      this._startKeepalive();
      this._resolveReady(frame);
      this._emit("open", { welcome: frame, reconnected });
    }
    if (frame.type === "pong") {
      clearTimeout(this._pongTimer);
      this._pongTimer = null;
    }
    if (frame.type === "auth.expiring") this._renew(frame.expires_at);
    const ref = frame.ref;
    const pending = typeof ref === "string" ? this._pending.get(ref) : undefined;
    if (pending) {
      this._pending.delete(ref);
      clearTimeout(pending.timer);
      if (frame.type === "error") {
        pending.reject(new ProtocolError(frame.code, frame.message, { ...frame }));
      } else {
        pending.resolve(frame);
      }
    }
    // An error that answered a request() belongs to its caller alone.
    if (frame.type === "error" && pending) return;
    this._emit(frame.type, frame);
    this._emit("*", frame);
  }

  /** Get a new token and hand it to the open socket (PROTOCOL.md §11). */
  _renew(expiresAt) {
    if (this._renewing || this._closedForGood) return;
    clearTimeout(this._renewTimer);
    this._renewTimer = null;
    this._renewing = (async () => {
      try {
        const token = await this.refreshToken(this.token);
        this.token = token;
        // In use from now on: for HTTP calls, and for the next reconnect.
        this._emit("token", { token });
        await this.request({ type: "auth", token });
      } catch (err) {
        console.warn("the sign-in could not be renewed yet", err?.code || err);
        // Try again while the old token still holds; past it the server closes 4401.
        if (secondsUntil(expiresAt) > this.renewRetryMs / 1000 && !this._closedForGood) {
          this._renewTimer = setTimeout(() => this._renew(expiresAt), this.renewRetryMs);
        }
      } finally {
        this._renewing = null;
      }
    })();
  }

  _startKeepalive() {
    this._stopKeepalive();
    this._pingTimer = setInterval(() => {
      if (!this.isOpen || this._pongTimer !== null) return;
      this.send({ type: "ping", ref: `ping${++this._refSeq}` });
      this._pongTimer = setTimeout(() => {
        this._pongTimer = null;
        this._lost(CLOSE_KEEPALIVE, "no pong");
      }, this.pongTimeoutMs);
    }, this.pingIntervalMs);
  }

  _stopKeepalive() {
    clearInterval(this._pingTimer);
    clearTimeout(this._pongTimer);
    this._pingTimer = null;
    this._pongTimer = null;
  }

  _failPending(code, message) {
    for (const [ref, p] of this._pending) {
      clearTimeout(p.timer);
      p.reject(new ProtocolError(code, message, { ref }));
    }
    this._pending.clear();
  }

  /** The socket is gone (closed by the server, the network, or keepalive). */
  _lost(code, reason) {
    const ws = this._ws;
    this._ws = null;
    this._authed = false;
    this._stopKeepalive();
    if (ws) {
      this._detach(ws);
      try {
        ws.close(CLOSE_KEEPALIVE, "reconnecting");
      } catch {
        // already closing
      }
    }
    this._failPending("disconnected", "The connection to the server was lost.");
    if (this._closedForGood) return;
    if (code === CLOSE_UNAUTHORIZED || code === CLOSE_AUTH_TIMEOUT) {
      this._setState("signed_out");
      this._emit("close", { code, reason, willReconnect: false });
      this._rejectReady(new ProtocolError("unauthorized", "Your sign-in is no longer valid."));
      this._emit("signedout", { code, reason });
      return;
    }
    this._emit("close", { code, reason, willReconnect: true });
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    this._setState("reconnecting");
    const cap = Math.min(this.backoffMaxMs, this.backoffBaseMs * 2 ** this._attempt);
    const delayMs = Math.round(cap / 2 + Math.random() * (cap / 2)); // jitter
    this._attempt += 1;
    this._emit("reconnecting", { attempt: this._attempt, delayMs });
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (!this._closedForGood) this._open();
    }, delayMs);
  }
}

// ---- words for people -------------------------------------------------------

/** `session.ended` reasons in plain words (from the therapist's and the client's side). */
export const END_REASONS = {
  ended_by_client: { therapist: "The client ended the call.", client: "You ended the call." },
  ended_by_therapist: { therapist: "You ended the call.", client: "Your therapist ended the call." },
  peer_lost: {
    therapist: "The connection to the client was lost.",
    client: "The connection to your therapist was lost.",
  },
  funds_exhausted: {
    therapist: "The client's balance ran out.",
    client: "Your balance ran out, so the call ended.",
  },
};

/** A plain-words sentence for a `session.ended` reason, as `role` sees it. */
export function describeEndReason(reason, role = "client") {
  const words = END_REASONS[reason];
  if (!words) return "The call ended.";
  return words[role] || words.client;
}

/** "1 min 5 s", "42 s", "1 h 2 min". */
export function formatDuration(seconds) {
  const s = Math.max(0, Math.floor(Number(seconds) || 0));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  if (h > 0) return `${h} h ${m} min`;
  if (m > 0) return `${m} min ${r} s`;
  return `${r} s`;
}

/** "m:ss" (or "h:mm:ss") for a ticking clock. */
export function formatClock(seconds) {
  const s = Math.max(0, Math.floor(Number(seconds) || 0));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${r}` : `${m}:${r}`;
}

/** Whole seconds from now until an RFC 3339 time (negative once past); NaN if unreadable. */
export function secondsUntil(isoTime, nowMs = Date.now()) {
  const t = Date.parse(isoTime);
  return Number.isNaN(t) ? Number.NaN : Math.ceil((t - nowMs) / 1000);
}
