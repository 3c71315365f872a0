// callcontrols.js — the in-call controls both pages share (an ES module, no build step).
//
// A Call (call.js) makes one from its `controls` option and feeds it every
// event it tells the page; the page only supplies the markup.
//
// API
//   new CallControls({root, lost}, call)
//     root: an element holding
//       <button data-control="mic" aria-pressed="false">    pressed = muted
//       <button data-control="camera" aria-pressed="false"> pressed = camera off
//       <p data-control="state">   what is off, in words (optional)
//     lost: an element shown with "Connection lost — reconnecting…" while the
//       websocket reconnects or the peer connection is down, hidden once both
//       are back (role="status" on it makes screen readers say so).
//   controls.update(event, detail)   a Call event (see call.js "onState events").
//   controls.close()                 unhooks and resets the controls.
//
// The buttons keep one label each; aria-pressed (and its style) says the state,
// and the state line says it again in words. A button is disabled while its
// kind of track is missing (media not started yet, or refused).

const LOST_TEXT = "Connection lost — reconnecting…";

export class CallControls {
  constructor({ root = null, lost = null } = {}, call) {
    this.call = call;
    this.lost = lost;
    this.mic = root?.querySelector('[data-control="mic"]') ?? null;
    this.camera = root?.querySelector('[data-control="camera"]') ?? null;
    this.stateLine = root?.querySelector('[data-control="state"]') ?? null;
    this._wsDown = call.conn.state === "reconnecting";
    this._mediaDown = false;
    this._onMic = () => call.setMicrophone(!call.micOn);
    this._onCamera = () => call.setCamera(!call.cameraOn);
    this.mic?.addEventListener("click", this._onMic);
    this.camera?.addEventListener("click", this._onCamera);
    this._offConn = call.conn.on("state", ({ state }) => {
      this._wsDown = state === "reconnecting";
      this._renderLost();
    });
    this._renderButtons();
    this._renderLost();
  }

  update(event, detail = {}) {
    if (event === "state") {
      if (detail.state === "reconnecting") this._mediaDown = true;
      else if (["connected", "ending", "ended"].includes(detail.state)) this._mediaDown = false;
      this._renderLost();
    } else if (event === "connection") {
      if (detail.state === "connected") this._mediaDown = false;
      else if (detail.state === "failed" || detail.state === "disconnected") this._mediaDown = true;
      this._renderLost();
    } else if (event === "media" || event === "controls") {
      this._renderButtons();
    }
  }

  _tracks(kind) {
    const stream = this.call.localStream;
    if (!stream) return 0;
    return (kind === "audio" ? stream.getAudioTracks() : stream.getVideoTracks()).length;
  }

  _renderButtons() {
    const audio = this._tracks("audio") > 0;
    const video = this._tracks("video") > 0;
    const { micOn, cameraOn } = this.call;
    if (this.mic) {
      this.mic.disabled = !audio;
      this.mic.setAttribute("aria-pressed", String(audio && !micOn));
    }
    if (this.camera) {
      this.camera.disabled = !video;
      this.camera.setAttribute("aria-pressed", String(video && !cameraOn));
    }
    if (this.stateLine) {
      const off = [];
      if (audio && !micOn) off.push("your microphone is muted");
      if (video && !cameraOn) off.push("your camera is off");
      const text = off.join(" and ");
      this.stateLine.textContent = text ? `${text[0].toUpperCase()}${text.slice(1)}.` : "";
      this.stateLine.hidden = !text;
    }
  }

  _renderLost() {
    if (!this.lost) return;
    const down = this._wsDown || this._mediaDown;
    if (down === !this.lost.hidden) return;
    this.lost.hidden = !down;
    // Filled after it shows, so that a live region announces it.
    this.lost.textContent = "";
    if (down) setTimeout(() => {
      if (!this.lost.hidden) this.lost.textContent = LOST_TEXT;
    }, 50);
  }

  close() {
    this._offConn?.();
    this._offConn = null;
    this.mic?.removeEventListener("click", this._onMic);
    this.camera?.removeEventListener("click", this._onCamera);
    for (const button of [this.mic, this.camera]) {
      if (!button) continue;
      button.setAttribute("aria-pressed", "false");
      button.disabled = true;
    }
    if (this.stateLine) {
      this.stateLine.textContent = "";
      this.stateLine.hidden = true;
    }
    if (this.lost) {
      this.lost.hidden = true;
      this.lost.textContent = "";
    }
  }
}
