// call.js — the WebRTC call of one session (an ES module, no build step).
//
// API
//   const call = new Call({conn, session, selfId, role, localVideo, remoteVideo, onState})
//     conn: a protocol.js Connection; session: S from `session.ready`;
//     selfId: this user's id; role: "client" | "therapist"; localVideo /
//     remoteVideo: <video> elements (either may be null); onState(event, detail)
//     is told what happens (below). Sets window.qcCall = call (for tests).
//   await call.start()
//     getUserMedia({audio, video}) (on failure the call goes on without this
//     side's media and onState("media", {ok: false, message}) says why), an
//     RTCPeerConnection with session.ice_servers, then `session.join`.
//   await call.hangUp() -> the `session.ended` frame | null
//     Stops the camera at once, sends `session.end` (after the websocket
//     comes back, if it is down), then closes everything.
//   call.close()         Closes media and the peer connection without ending
//                        the session (e.g. the page goes away).
//   call.finish({reason, duration_s})  Closes the call as ended, for an end
//                        learnt another way (e.g. GET /v1/sessions after a
//                        reconnect that brought no `session.ready`).
//   call.unmuteRemote()  Plays the remote audio after the browser blocked autoplay.
//   call.setMicrophone(on) / call.setCamera(on)  Mute or unmute this side's
//                        microphone, turn its camera off or on (track.enabled:
//                        the peer connection and its tracks stay, so turning
//                        back on needs no renegotiation). call.micOn, call.cameraOn.
//   controls (constructor option): an element holding the in-call controls
//     (callcontrols.js: mute, camera, "connection lost"); the call wires them
//     while it runs and resets them when it closes.
//   await call.framesDecoded() -> number   inbound video frames decoded so far.
//   call.pc              the RTCPeerConnection (for tests: getStats()).
//   call.state           "starting" | "joining" | "waiting" | "connecting" |
//                        "connected" | "reconnecting" | "ending" | "ended"
//   call.peerJoined, call.live, call.startedAt, call.ended ({reason, duration_s}),
//   call.localStream, call.remoteStream, call.mediaError
//
//   onState events: "state" {state} · "media" {ok, message?, audio, video} ·
//   "joined" {state, peerJoined} · "peer_joined" {userId, rejoin} ·
//   "live" {startedAt} · "connection" {state: pc.connectionState} ·
//   "autoplay" {blocked} · "rejoined" {} · "ended" {reason, duration_s} ·
//   "controls" {mic, camera}
//
// Signalling: `rtc.signal` data is {pc, to, hello}, {pc, to, description} or
// {pc, to, candidate}, where `pc` names the sender's RTCPeerConnection and `to`
// the receiver's one it is meant for (null until known); a signal for a peer
// connection we no longer have is dropped, but for a `hello`, always heard.
//
// Who offers: the therapist, always. The client never makes an offer of its
// own: it sends `hello` ("here is my peer connection; offer to it") and
// answers. Two first offers can therefore never cross (glare: in Chromium a
// rolled-back offer can leave the answer with no ICE candidates, and the call
// then never connects). Both sides send `hello` after each `session.join`;
// a `hello` (or offer) from a peer connection not seen before means the other
// side has a new one (it reloaded its page): a side whose own peer connection
// was negotiated with another builds a fresh one (a never-used one is kept: the
// other side may be addressing it), then the therapist offers to it and the
// client says hello back. An answer is taken when its `to` names our offering
// peer connection, from whichever peer connection it comes. A `hello` with
// `restart: true` asks the therapist for an ICE restart; the client sends one
// when its connection failed, after a reconnect, and, as a watchdog, every
// STUCK_MS while the call has not connected. An offer
// that does come from the other side (another team's client) is still
// answered, with the therapist as the impolite side of "perfect negotiation".
// When the websocket comes back inside the reconnect grace the server sends
// `session.ready` for the same session again: the call joins again and, if
// the media path broke meanwhile, restarts ICE.

import { CallControls } from "./callcontrols.js";

/** How long a call may stay unconnected, with both sides joined, before the
 *  client asks the therapist for an ICE restart (and again after as long). */
const STUCK_MS = 8000;
/** An offer not answered for this long is stale: a `hello` then makes a new one. */
const OFFER_STALE_MS = 5000;

function mediaErrorMessage(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Camera and microphone access was not allowed. The call goes on without your video and sound; chat still works.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No camera or microphone was found. The call goes on without your video and sound; chat still works.";
    case "NotReadableError":
    case "AbortError":
      return "The camera or microphone is in use by another program. The call goes on without your video and sound.";
    case "NoMediaDevices":
      return "This browser cannot use a camera or microphone here (the page must be served over https). The call goes on without them.";
    default:
      return "The camera and microphone could not be started. The call goes on without your video and sound.";
  }
}

export class Call {
  constructor({
    conn,
    session,
    selfId,
    role,
    localVideo = null,
    remoteVideo = null,
    onState = () => {},
    controls = null,
  }) {
    this.conn = conn;
    this.session = session;
    this.sessionId = session.id;
    this.selfId = selfId;
    this.role = role;
    this.polite = role === "client";
    /** The therapist makes every offer; the client asks for one (see the header). */
    this.offerer = role === "therapist";
    this.localVideo = localVideo;
    this.remoteVideo = remoteVideo;
    this.onState = onState;

    this.state = "starting";
    this.pc = null;
    this.pcId = null;
    this.remotePcId = null;
    this.localStream = null;
    this.remoteStream = null;
    this.mediaError = null;
    this.peerJoined = false;
    this._peerJoinSeen = false;
    this.joined = false;
    this.live = session.state === "live";
    this.startedAt = session.started_at || null;
    this.ended = null;
    this.autoplayBlocked = false;
    this.micOn = true;
    this.cameraOn = true;

    this._makingOffer = false;
    this._ignoreOffer = false;
    this._settingRemoteAnswer = false;
    this._offerSentAt = 0;
    this._stuckSince = null;
    this._watchdog = null;
    this._signalQueue = Promise.resolve();
    this._offs = [];
    this._closed = false;
    this._hangingUp = false;
    this._controls = controls ? new CallControls(controls, this) : null;
    globalThis.qcCall = this;
  }

  _tell(event, detail = {}) {
    try {
      this._controls?.update(event, detail);
      this.onState(event, detail, this);
    } catch (err) {
      console.error("call onState failed", err);
    }
  }

  /** Mute (false) or unmute (true) this side's microphone. */
  setMicrophone(on) {
    this.micOn = !!on;
    this.localStream?.getAudioTracks().forEach((t) => (t.enabled = this.micOn));
    this._tell("controls", { mic: this.micOn, camera: this.cameraOn });
  }

  /** Turn this side's camera off (false) or back on (true). */
  setCamera(on) {
    this.cameraOn = !!on;
    this.localStream?.getVideoTracks().forEach((t) => (t.enabled = this.cameraOn));
    this._tell("controls", { mic: this.micOn, camera: this.cameraOn });
  }

  _setState(state) {
    if (this.state === state || this.state === "ended") return;
    this.state = state;
    this._tell("state", { state });
  }

  _mine(frame) {
    return frame && frame.session_id === this.sessionId;
  }

  /** Get the media, build the peer connection and join the session. */
  async start() {
    this._listen();
    await this._getMedia();
    if (this._closed) return;
    this._buildPc();
    this._setState("joining");
    if (!this.offerer) this._watchdog = setInterval(() => this._checkStuck(), STUCK_MS / 4);
    await this._join();
  }

  async _getMedia() {
    const md = globalThis.navigator?.mediaDevices;
    let stream = null;
    let error = null;
    if (!md || typeof md.getUserMedia !== "function") {
      error = { name: "NoMediaDevices" };
    } else {
      for (const constraints of [{ audio: true, video: true }, { audio: true }, { video: true }]) {
        try {
          stream = await md.getUserMedia(constraints);
          break;
        } catch (err) {
          error = error || err;
          // A refusal covers every kind: asking again would only ask again.
          if (err && (err.name === "NotAllowedError" || err.name === "SecurityError")) break;
        }
      }
    }
    if (this._closed) {
      stream?.getTracks().forEach((t) => t.stop());
      return;
    }
    this.localStream = stream;
    // Muted or camera off before the media came: keep it so.
    stream?.getAudioTracks().forEach((t) => (t.enabled = this.micOn));
    stream?.getVideoTracks().forEach((t) => (t.enabled = this.cameraOn));
    const audio = !!stream && stream.getAudioTracks().length > 0;
    const video = !!stream && stream.getVideoTracks().length > 0;
    if (stream) {
      if (this.localVideo) {
        this.localVideo.muted = true;
        this.localVideo.srcObject = stream;
        this.localVideo.play?.().catch(() => {});
      }
    }
    if (!stream) {
      this.mediaError = mediaErrorMessage(error);
      this._tell("media", { ok: false, message: this.mediaError, audio, video });
    } else if (!audio || !video) {
      this.mediaError = !video
        ? "No camera is available: the other side hears you but does not see you."
        : "No microphone is available: the other side sees you but does not hear you.";
      this._tell("media", { ok: true, partial: true, message: this.mediaError, audio, video });
    } else {
      this._tell("media", { ok: true, audio, video });
    }
  }

  _buildPc() {
    const pc = new RTCPeerConnection({ iceServers: this.session.ice_servers || [] });
    this.pc = pc;
    this.pcId = `pc${Math.random().toString(36).slice(2, 10)}${Date.now().toString(36)}`;
    this._makingOffer = false;
    this._ignoreOffer = false;
    this._settingRemoteAnswer = false;

    const tracks = this.localStream ? this.localStream.getTracks() : [];
    for (const track of tracks) pc.addTrack(track, this.localStream);
    // Without our own audio or video, still ask to receive the other side's.
    const kinds = new Set(tracks.map((t) => t.kind));
    for (const kind of ["audio", "video"]) {
      if (!kinds.has(kind)) pc.addTransceiver(kind, { direction: "recvonly" });
    }

    this.remoteStream = new MediaStream();
    if (this.remoteVideo) this.remoteVideo.srcObject = this.remoteStream;

    // Only the therapist offers, and only once it knows whom to (a `hello`).
    pc.onnegotiationneeded = () => {
      if (pc === this.pc && this.offerer) this._offer();
    };
    pc.onicecandidate = ({ candidate }) => {
      if (pc !== this.pc || !candidate) return;
      this._signal({ candidate: candidate.toJSON() });
    };
    pc.ontrack = ({ track }) => {
      if (pc !== this.pc) return;
      if (!this.remoteStream.getTracks().includes(track)) this.remoteStream.addTrack(track);
      track.onunmute = () => this._playRemote();
      this._playRemote();
    };
    pc.onconnectionstatechange = () => {
      if (pc !== this.pc) return;
      const state = pc.connectionState;
      this._tell("connection", { state });
      if (state === "connected") this._setState("connected");
      else if (state === "failed") {
        this._setState("reconnecting");
        if (this.conn.isOpen) this._restart();
      } else if (state === "disconnected") this._setState("reconnecting");
      else if (state === "connecting" && this.state !== "reconnecting") this._setState("connecting");
    };
  }

  _playRemote() {
    const video = this.remoteVideo;
    if (!video || this._closed) return;
    if (video.srcObject !== this.remoteStream) video.srcObject = this.remoteStream;
    const p = video.play?.();
    if (!p || typeof p.catch !== "function") return;
    p.catch((err) => {
      if (err && err.name === "NotAllowedError" && !video.muted) {
        // The browser blocks sound without a click: play muted, offer to unmute.
        video.muted = true;
        this.autoplayBlocked = true;
        this._tell("autoplay", { blocked: true });
        video.play().catch(() => {});
      }
    });
  }

  /** After the browser blocked autoplay with sound: call from a click. */
  unmuteRemote() {
    if (!this.remoteVideo) return;
    this.remoteVideo.muted = false;
    this.remoteVideo.play?.().catch(() => {});
    this.autoplayBlocked = false;
    this._tell("autoplay", { blocked: false });
  }

  _signal(data) {
    this.conn.send({
      type: "rtc.signal",
      session_id: this.sessionId,
      data: { pc: this.pcId, to: this.remotePcId, ...data },
    });
  }

  /** Tell the other side which peer connection is ours. From the client this
   *  also asks for an offer (with `restart`, for an ICE restart of the pair). */
  _hello(restart = false) {
    if (!this.pc || this._closed || this._hangingUp) return;
    this._signal(restart ? { hello: true, restart: true } : { hello: true });
  }

  async _join() {
    try {
      const joined = await this.conn.request({ type: "session.join", session_id: this.sessionId });
      if (this._closed) return;
      this.joined = true;
      if (joined.state === "live") this.live = true;
      if (joined.peer_joined) this.peerJoined = true;
      this._tell("joined", { state: joined.state, peerJoined: !!joined.peer_joined });
      const pc = this.pc;
      if (pc && pc.connectionState !== "connected") {
        this._setState(this.peerJoined ? "connecting" : "waiting");
      }
      // Say hello after every join: the other side may have a new peer
      // connection that could not reach us while we were away. A rejoin whose
      // media path broke meanwhile also restarts ICE (the client asks for it).
      const broken = !!pc?.currentRemoteDescription && pc.connectionState !== "connected";
      if (broken && this.offerer) this._restart();
      this._hello(broken && !this.offerer);
    } catch (err) {
      if (this._closed) return;
      if (err.code === "not_found" || err.code === "forbidden") {
        // The session ended while we were away.
        this._finish({ reason: null, duration_s: 0 });
      } else if (err.code !== "disconnected") {
        console.warn("session.join failed", err.code);
      }
      // "disconnected": the reconnect brings `session.ready` and we join again.
    }
  }

  _listen() {
    const on = (type, fn) => this._offs.push(this.conn.on(type, fn));
    on("rtc.signal", (frame) => {
      if (!this._mine(frame) || !frame.data || typeof frame.data !== "object") return;
      this._signalQueue = this._signalQueue
        .then(() => this._onSignal(frame.data))
        .catch((err) => console.warn("signal failed", err));
    });
    on("session.peer_joined", (frame) => {
      if (!this._mine(frame)) return;
      // A rejoin is a second peer_joined frame. Our own session.joined may
      // already have said the peer is there (both joined at once): that is
      // still its first join, and renegotiating then breaks the first offer.
      const rejoin = this._peerJoinSeen;
      this._peerJoinSeen = true;
      this.peerJoined = true;
      this._tell("peer_joined", { userId: frame.user_id, rejoin });
      if (this.state === "waiting") this._setState("connecting");
      // Nothing to negotiate here: the peer's `hello` after its join says
      // whether it kept its peer connection or has a new one.
    });
    on("session.live", (frame) => {
      if (!this._mine(frame)) return;
      this.live = true;
      this.startedAt = frame.started_at || this.startedAt;
      this._tell("live", { startedAt: this.startedAt });
    });
    on("session.ready", (frame) => {
      // The websocket came back inside the grace: join again, restart ICE.
      const s = frame.session;
      if (!s || s.id !== this.sessionId || this._closed || this._hangingUp) return;
      this.session = { ...this.session, ...s, ice_servers: s.ice_servers || this.session.ice_servers };
      if (s.state === "live") {
        this.live = true;
        this.startedAt = s.started_at || this.startedAt;
      }
      this._tell("rejoined", {});
      this._join();
    });
    on("session.ended", (frame) => {
      if (!this._mine(frame)) return;
      this._finish({ reason: frame.reason, duration_s: frame.duration_s });
    });
  }

  async _onSignal(data) {
    if (this._closed || this._hangingUp) return;
    const { description, candidate } = data;
    const from = typeof data.pc === "string" ? data.pc : null;
    const to = typeof data.to === "string" ? data.to : null;
    if (data.hello === true) {
      // Whatever its `to`: a hello names the sender's peer connection, and one
      // addressed to a peer connection of ours that is gone says the sender's
      // view is stale, which answering it mends.
      if (from) await this._onHello(from, data.restart === true);
      return;
    }
    if (to && to !== this.pcId) return; // meant for a peer connection we no longer have
    if (description) {
      if (description.type === "offer" && from && from !== this.remotePcId) {
        // The other side has a new peer connection (it reloaded): start afresh.
        this._dropStalePc();
      }
      let pc = this.pc;
      if (!pc) return;
      // An answer is to our offer in flight (`to` said it is ours); it may come
      // from a peer connection the other side made since, which we adopt.
      if (description.type === "answer" && pc.signalingState !== "have-local-offer") return;
      const readyForOffer =
        !this._makingOffer && (pc.signalingState === "stable" || this._settingRemoteAnswer);
      const collision = description.type === "offer" && !readyForOffer;
      this._ignoreOffer = !this.polite && collision;
      if (this._ignoreOffer) return;
      this._settingRemoteAnswer = description.type === "answer";
      try {
        await pc.setRemoteDescription(description); // rolls back our offer if polite
      } finally {
        this._settingRemoteAnswer = false;
      }
      if (from) this.remotePcId = from;
      pc = this.pc;
      if (description.type === "offer" && pc) {
        await pc.setLocalDescription();
        this._signal({ description: pc.localDescription.toJSON() });
      }
    } else if (candidate) {
      if (from && this.remotePcId && from !== this.remotePcId) return; // a stale peer connection
      try {
        await this.pc?.addIceCandidate(candidate);
      } catch (err) {
        if (!this._ignoreOffer) console.warn("a remote ICE candidate was refused", err);
      }
    }
  }

  /** The other side named its peer connection `from` (see the header). */
  async _onHello(from, restart) {
    const pc = this.pc;
    if (from !== this.remotePcId) {
      this._dropStalePc();
      this.remotePcId = from;
      if (this.offerer) await this._offer();
      else this._hello();
      return;
    }
    // The one we know: the therapist restarts ICE when asked, or offers if it never did.
    if (this.offerer && pc && (restart || !pc.currentRemoteDescription)) await this._restart(restart);
  }

  /** Therapist: offer to the client's peer connection (unless one is in flight). */
  async _offer() {
    const pc = this.pc;
    if (!pc || !this.remotePcId || this._closed || this._hangingUp) return;
    if (this._makingOffer || pc.signalingState !== "stable") return;
    try {
      this._makingOffer = true;
      await pc.setLocalDescription();
      if (pc !== this.pc || pc.signalingState !== "have-local-offer") return;
      this._offerSentAt = Date.now();
      this._signal({ description: pc.localDescription.toJSON() });
    } catch (err) {
      console.warn("could not make an offer", err);
    } finally {
      this._makingOffer = false;
    }
  }

  /** A peer connection of the other side's that we have not negotiated with:
   *  ours is stale if it was already used with another one. Rebuilding a fresh
   *  one would only rename it, and the other side may be addressing it. */
  _dropStalePc() {
    const pc = this.pc;
    if (pc && (pc.localDescription || pc.remoteDescription)) this._rebuildPc();
  }

  _rebuildPc() {
    const old = this.pc;
    if (old) {
      old.onnegotiationneeded = old.onicecandidate = old.ontrack = old.onconnectionstatechange = null;
      old.close();
    }
    this._buildPc();
    this._tell("connection", { state: this.pc.connectionState, rebuilt: true });
  }

  /** Get the media path back: the therapist restarts ICE (dropping an offer
   *  left unanswered too long), the client asks the therapist to. */
  async _restart(ice = true) {
    const pc = this.pc;
    if (!pc || this._closed || this._hangingUp) return;
    if (!this.offerer) {
      this._hello(true);
      return;
    }
    if (!this.remotePcId) {
      this._hello(); // nobody to offer to yet: the client's hello names its peer connection
      return;
    }
    try {
      if (pc.signalingState === "have-local-offer") {
        if (Date.now() - this._offerSentAt < OFFER_STALE_MS) return; // its answer is on its way
        await pc.setLocalDescription({ type: "rollback" });
      }
      if (ice) pc.restartIce();
      await this._offer();
    } catch (err) {
      console.warn("ICE restart failed", err);
    }
  }

  /** Client, every STUCK_MS / 4: both joined, open websocket, still no media
   *  path for STUCK_MS? Ask the therapist for an ICE restart. */
  _checkStuck() {
    const pc = this.pc;
    const idle = !pc || this._closed || this._hangingUp || !this.joined || !this.peerJoined;
    if (idle || !this.conn.isOpen || pc.connectionState === "connected") {
      this._stuckSince = null;
      return;
    }
    const now = Date.now();
    if (this._stuckSince === null) this._stuckSince = now;
    else if (now - this._stuckSince >= STUCK_MS) {
      this._stuckSince = now;
      this._hello(true);
    }
  }

  async framesDecoded() {
    if (!this.pc) return 0;
    let total = 0;
    const stats = await this.pc.getStats();
    stats.forEach((r) => {
      if (r.type === "inbound-rtp" && (r.kind === "video" || r.mediaType === "video")) {
        total += r.framesDecoded || 0;
      }
    });
    return total;
  }

  /** End the session for both sides and close this call. */
  async hangUp() {
    if (this.ended || this._hangingUp) return null;
    this._hangingUp = true;
    this._stopMedia(); // the camera goes off at once
    this._setState("ending");
    let frame = null;
    for (let attempt = 0; attempt < 3 && !this.ended; attempt += 1) {
      if (!this.conn.isOpen && !(await this._waitOpen(20000))) break;
      try {
        frame = await this.conn.request({ type: "session.end", session_id: this.sessionId });
        break;
      } catch (err) {
        if (err.code !== "disconnected" && err.code !== "timeout") {
          console.warn("session.end failed", err.code);
          break;
        }
      }
    }
    if (frame && frame.type === "session.ended") {
      this._finish({ reason: frame.reason, duration_s: frame.duration_s });
    } else {
      this._finish({ reason: null, duration_s: null });
    }
    return frame;
  }

  _waitOpen(timeoutMs) {
    return new Promise((resolve) => {
      const off = this.conn.on("open", () => {
        clearTimeout(timer);
        off();
        resolve(true);
      });
      const timer = setTimeout(() => {
        off();
        resolve(false);
      }, timeoutMs);
    });
  }

  /** The session ended (learnt another way): close and report "ended". */
  finish(ended) {
    this._finish({ reason: ended?.reason ?? null, duration_s: ended?.duration_s ?? null });
  }

  _finish(ended) {
    if (this.ended) return;
    this.ended = ended;
    this.close();
    this.state = "ended";
    this._tell("state", { state: "ended" });
    this._tell("ended", ended);
  }

  /** Stop the camera and microphone and the peer connection. */
  _stopMedia() {
    const pc = this.pc;
    if (pc) {
      pc.onnegotiationneeded = pc.onicecandidate = pc.ontrack = pc.onconnectionstatechange = null;
      try {
        pc.close();
      } catch {
        // already closed
      }
    }
    this.localStream?.getTracks().forEach((t) => t.stop());
    for (const video of [this.localVideo, this.remoteVideo]) {
      if (video) {
        video.pause?.();
        video.srcObject = null;
      }
    }
  }

  /** Stop the media and the peer connection and stop listening (does not end the session). */
  close() {
    if (this._closed) return;
    this._closed = true;
    this._controls?.close();
    clearInterval(this._watchdog);
    for (const off of this._offs) off();
    this._offs = [];
    this._stopMedia();
  }
}
