// streamtts relay: the AudioWorklet player (runs on the audio rendering thread).
//
// How it works: decoded PCM arrives from the page through `port.postMessage` (transferred
// Float32Arrays, planar) and is copied into a preallocated ring (two planes, monotonic frame
// counters `w` written and `r` read; nothing is allocated while rendering). Utterance
// boundaries are marks at write positions ("begin", "end"). The player is idle, buffering or
// playing. Buffering ends when `startFrames` are buffered, or when an utterance's end is
// already in the ring (a short tail plays at once). Running dry while playing, with no end
// mark at the read position, is an underrun: counted, silence is output and the player buffers
// again (the page then raises `startFrames`). Reaching an end mark is not an underrun.
// Counters are exact: `framesPlayed` counts audio frames output, not silence.

// Ring capacity in frames: 30 s at 48 kHz (11.5 MB for two planes). The relay releases at most
// ~1 s ahead of real time, so the ring never fills in practice; if it does, the oldest audio is
// dropped and counted (`overflowFrames`).
const CAPACITY = 48000 * 30;
// Render quanta between two periodic stats messages: 16 x 128 frames = 43 ms at 48 kHz, often
// enough for a live display, rare enough to cost nothing.
const STATS_EVERY = 16;

class StreamttsPlayer extends AudioWorkletProcessor {
  constructor() {
    super();
    this.left = new Float32Array(CAPACITY);
    this.right = new Float32Array(CAPACITY);
    this.w = 0; // frames written (monotonic)
    this.r = 0; // frames read (monotonic)
    this.marks = []; // {at, kind: "begin" | "end", utterance}, in write order
    this.state = "idle"; // "idle" | "buffering" | "playing"
    this.stalled = false; // buffering after an underrun
    this.startFrames = 1920;
    this.beginPending = null; // utterance whose first frame has not been output yet
    this.framesPlayed = 0;
    this.underruns = 0;
    this.silenceFrames = 0;
    this.overflowFrames = 0;
    this.quanta = 0;
    this.capture = null; // test hook, see onMessage
    this.captured = 0;
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  onMessage(m) {
    if (m.type === "audio") {
      this.write(m.left, m.right || m.left);
      if (this.state === "idle") this.state = "buffering";
    } else if (m.type === "begin" || m.type === "end") {
      this.marks.push({ at: this.w, kind: m.type, utterance: m.utterance });
      if (this.state === "idle") this.state = "buffering";
    } else if (m.type === "cut") {
      // Barge-in: the utterance's buffered audio is dropped at once. If it has not started
      // playing (its begin mark is still ahead), what plays before it stays.
      const at = this.marks.findIndex((mark) => mark.kind === "begin" && mark.utterance === m.utterance);
      if (at >= 0) {
        this.w = this.marks[at].at;
        this.marks.length = at;
      } else {
        this.r = this.w;
        this.marks = [];
        this.beginPending = null;
        this.state = "idle";
        this.stalled = false;
      }
      if (this.w === this.r && !this.marks.length && !this.stalled) this.state = "idle";
      this.report("cut", { utterance: m.utterance });
    } else if (m.type === "config") {
      this.startFrames = m.startFrames;
    } else if (m.type === "capture") {
      // Test hook: keep a copy of the first channel's audio frames as played (allocated here,
      // on request, never while rendering).
      this.capture = new Float32Array(m.frames);
      this.captured = 0;
    } else if (m.type === "getCapture") {
      const data = this.capture ? this.capture.slice(0, this.captured) : new Float32Array(0);
      this.port.postMessage({ type: "capture", data }, [data.buffer]);
    }
  }

  write(left, right) {
    const n = left.length;
    const overflow = this.w + n - this.r - CAPACITY;
    if (overflow > 0) {
      this.r += overflow;
      this.overflowFrames += overflow;
    }
    let at = this.w % CAPACITY;
    let done = 0;
    while (done < n) {
      const k = Math.min(n - done, CAPACITY - at);
      this.left.set(left.subarray(done, done + k), at);
      this.right.set(right.subarray(done, done + k), at);
      done += k;
      at = 0;
    }
    this.w += n;
  }

  report(type, extra) {
    this.port.postMessage({
      type,
      framesPlayed: this.framesPlayed,
      underruns: this.underruns,
      silenceFrames: this.silenceFrames,
      overflowFrames: this.overflowFrames,
      buffered: this.w - this.r,
      state: this.state,
      time: currentTime,
      ...extra,
    });
  }

  endAhead() {
    for (const mark of this.marks) if (mark.kind === "end") return true;
    return false;
  }

  process(inputs, outputs) {
    const out = outputs[0];
    const L = out[0];
    const R = out.length > 1 ? out[1] : null;
    const n = L.length;
    let i = 0;
    while (i < n) {
      while (this.marks.length && this.marks[0].at <= this.r) {
        const mark = this.marks.shift();
        if (mark.kind === "begin") {
          this.beginPending = mark.utterance;
        } else {
          this.report("ended", { utterance: mark.utterance });
          // The next utterance (if any) starts under the start policy again.
          if (this.w - this.r < this.startFrames && !this.endAhead()) {
            this.state = this.w > this.r || this.marks.length ? "buffering" : "idle";
          }
        }
      }
      const avail = this.w - this.r;
      if (this.state === "buffering") {
        if (avail > 0 && (avail >= this.startFrames || this.endAhead())) {
          this.state = "playing";
          if (this.stalled) {
            this.stalled = false;
            this.report("recovered", {});
          }
        } else {
          break;
        }
      }
      if (this.state !== "playing") break;
      const toMark = this.marks.length ? this.marks[0].at - this.r : Infinity;
      if (toMark === 0) continue;
      const k = Math.min(n - i, avail, toMark);
      if (k === 0) {
        this.underruns += 1;
        this.state = "buffering";
        this.stalled = true;
        this.report("underrun", { at: currentTime + i / sampleRate });
        break;
      }
      let at = this.r % CAPACITY;
      let done = 0;
      while (done < k) {
        const m = Math.min(k - done, CAPACITY - at);
        L.set(this.left.subarray(at, at + m), i + done);
        if (R) R.set(this.right.subarray(at, at + m), i + done);
        done += m;
        at = 0;
      }
      if (this.capture && this.captured < this.capture.length) {
        const m = Math.min(k, this.capture.length - this.captured);
        this.capture.set(L.subarray(i, i + m), this.captured);
        this.captured += m;
      }
      if (this.beginPending !== null) {
        this.report("started", { utterance: this.beginPending, at: currentTime + i / sampleRate });
        this.beginPending = null;
      }
      this.r += k;
      this.framesPlayed += k;
      i += k;
    }
    if (i < n) {
      L.fill(0, i);
      if (R) R.fill(0, i);
      if (this.stalled) this.silenceFrames += n - i;
    }
    this.quanta += 1;
    if (this.quanta % STATS_EVERY === 0) this.report("stats", {});
    return true;
  }
}

registerProcessor("streamtts-player", StreamttsPlayer);
