// streamtts relay page: WebSocket → WebCodecs AudioDecoder ("opus") → AudioWorklet ring.
//
// How it works: the server sends a JSON "head" per utterance, then each Opus packet as a binary
// message (20-byte header: kind, flags, samples, utterance, sequence, position; see
// streamtts/relay.py), then a JSON "end". Each utterance gets its own AudioDecoder (a `Track`),
// configured with the stream's OpusHead as `description`, its pre-skip and gain fields zeroed:
// the decoder then removes nothing, and this page trims by granule position itself, exactly
// once: it keeps positions >= max(preSkip, start) (pre-skip at the start; for a late joiner
// `start` is the live position and earlier packets are decoder pre-roll) and, for the final
// packet, only its first `samples` (end trimming from the final granule, which no decoder
// does). Decoded audio goes to the worklet in utterance order; the worklet starts after a small
// adaptive buffer (MIN_START_MS plus twice the measured arrival jitter plus a penalty that grows
// with each underrun and shrinks with each clean utterance, 60 ms for a new page) and counts
// underruns. `window.streamtts.stats()` exposes the counters.

const SAMPLE_RATE = 48000;
// Start buffer bounds, ms. Measured in headless Chromium: 10 ms gave 5–14 underruns per
// utterance, 20 ms mostly none, 60 ms none even with both cores busy: 40 ms is the floor that
// holds on a busy machine, and 160 ms caps what a jittery link can cost in latency.
const MIN_START_MS = 40;
const MAX_START_MS = 160;
// Start buffer added after each underrun, and given back after each clean utterance (ms).
const UNDERRUN_STEP_MS = 20;
const CLEAN_DECAY_MS = 5;
// Penalty a new page starts with: nothing is measured yet, so its first utterances start at
// 60 ms (never an underrun in the measurements) and earn their way down to MIN_START_MS.
const INITIAL_PENALTY_MS = 20;
// Arrival jitter weight: two mean deviations cover most late arrivals (RFC 3550 style estimate).
const JITTER_FACTOR = 2;
// Smoothing of the jitter estimate: 1/16 per packet, as RFC 3550 §6.4.1.
const JITTER_GAIN = 1 / 16;

const $ = (id) => document.getElementById(id);

const counters = {
  framesPlayed: 0,
  underruns: 0,
  firstSoundMs: null,
  packetsReceived: 0,
  packetsLost: 0,
  underrunMs: 0,
  overflowFrames: 0,
  decodeErrors: 0,
  utterancesEnded: 0,
  lastEnded: null,
  state: "idle",
  buffered: 0,
  startBufferMs: MIN_START_MS + INITIAL_PENALTY_MS,
  jitterMs: 0,
  errors: [],
  underrunLog: [],
};

let ctx = null;
let node = null;
let ws = null;
const tracks = []; // utterances in play order
let current = null; // the track receiving packets
let requestAt = null; // performance.now() of the last Speak / Listen
const headAt = new Map(); // utterance → performance.now() when its head arrived
let penaltyMs = INITIAL_PENALTY_MS;
let prevTransit = null;
let hadUnderrun = false;
let captureWaiter = null;
let resolveReady;
const ready = new Promise((resolve) => { resolveReady = resolve; });

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function startFrames() {
  const ms = Math.min(MAX_START_MS,
    Math.max(MIN_START_MS, MIN_START_MS + JITTER_FACTOR * counters.jitterMs + penaltyMs));
  counters.startBufferMs = ms;
  return Math.round(ms * SAMPLE_RATE / 1000);
}

function configure() {
  if (node) node.port.postMessage({ type: "config", startFrames: startFrames() });
}

function decodeBase64(text) {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

class Track {
  constructor(head) {
    this.utterance = head.utterance;
    this.channels = head.channels;
    this.keepFrom = Math.max(head.preSkip, head.start);
    this.gain = Math.pow(10, head.gainDb / 20);
    this.meta = [];
    this.pending = [];
    this.nextSequence = null;
    this.begun = false;
    this.ended = false; // the end is known (final packet decoded, or flushed after "end")
    this.endPosted = false;
    this.cut = false;
    const description = decodeBase64(head.opusHead);
    // Zero pre-skip (bytes 10–11) and output gain (16–17): this page applies both itself, once.
    description[10] = 0; description[11] = 0;
    description[16] = 0; description[17] = 0;
    this.decoder = new AudioDecoder({
      output: (data) => this.onOutput(data),
      error: (error) => {
        counters.decodeErrors += 1;
        counters.errors.push(String(error));
      },
    });
    this.decoder.configure({
      codec: "opus",
      sampleRate: SAMPLE_RATE,
      numberOfChannels: this.channels,
      description,
    });
  }

  decode(packet) {
    if (this.cut || this.decoder.state !== "configured") return;
    if (this.nextSequence !== null && packet.sequence > this.nextSequence) {
      counters.packetsLost += packet.sequence - this.nextSequence;
    }
    this.nextSequence = packet.sequence + 1;
    const timestamp = Math.round(packet.position * 1e6 / SAMPLE_RATE);
    this.meta.push({ ...packet, timestamp });
    this.decoder.decode(new EncodedAudioChunk({ type: "key", timestamp, data: packet.data }));
  }

  onOutput(data) {
    // One output per packet; match by timestamp in case the decoder ever skipped one.
    let meta = this.meta.shift();
    while (meta && meta.timestamp < data.timestamp && this.meta.length) meta = this.meta.shift();
    const frames = data.numberOfFrames;
    if (!meta || this.cut) { data.close(); return; }
    const from = Math.max(0, this.keepFrom - meta.position);
    const to = Math.min(frames, meta.samples);
    if (to > from) {
      const left = new Float32Array(frames);
      data.copyTo(left, { planeIndex: 0, format: "f32-planar" });
      let right = null;
      if (this.channels > 1) {
        right = new Float32Array(frames);
        data.copyTo(right, { planeIndex: 1, format: "f32-planar" });
      }
      const l = left.slice(from, to);
      const r = right ? right.slice(from, to) : null;
      if (this.gain !== 1) {
        for (let i = 0; i < l.length; i++) l[i] *= this.gain;
        if (r) for (let i = 0; i < r.length; i++) r[i] *= this.gain;
      }
      this.pending.push({ left: l, right: r });
    }
    data.close();
    if (meta.final) this.ended = true;
    pump();
  }

  finish(reason) {
    if (reason === "stopped" || reason === "replaced") {
      this.cut = true;
      this.pending = [];
      if (this.decoder.state !== "closed") this.decoder.close();
      if (this.begun && node) node.port.postMessage({ type: "cut", utterance: this.utterance });
      pump();
      return;
    }
    // Complete, truncated or failed: play everything that came, then end.
    this.decoder.flush().then(() => { this.ended = true; pump(); }, () => { this.ended = true; pump(); });
  }
}

// Hand decoded audio to the worklet strictly in utterance order.
function pump() {
  while (tracks.length) {
    const t = tracks[0];
    if (t.cut) {
      tracks.shift();
      continue;
    }
    if (!t.begun) {
      node.port.postMessage({ type: "begin", utterance: t.utterance });
      t.begun = true;
    }
    for (const chunk of t.pending) {
      const transfer = chunk.right ? [chunk.left.buffer, chunk.right.buffer] : [chunk.left.buffer];
      node.port.postMessage({ type: "audio", left: chunk.left, right: chunk.right }, transfer);
    }
    t.pending = [];
    if (!t.ended) break;
    node.port.postMessage({ type: "end", utterance: t.utterance });
    t.endPosted = true;
    tracks.shift();
    if (t.decoder.state !== "closed") t.decoder.close();
  }
}

function onHead(head) {
  headAt.set(head.utterance, performance.now());
  prevTransit = null;
  hadUnderrun = false;
  current = new Track(head);
  tracks.push(current);
  counters.utterance = head.utterance;
  counters.lastHead = {
    utterance: head.utterance,
    start: head.start,
    preSkip: head.preSkip,
    // First frame this page plays, counted from the utterance's first output frame.
    firstFrame: Math.max(0, head.start - head.preSkip),
  };
  configure();
  setStatus(`playing utterance ${head.utterance}` + (head.text ? `: “${head.text.slice(0, 60)}”` : ""));
}

function onEnd(end) {
  const track = tracks.find((t) => t.utterance === end.utterance) || (current && current.utterance === end.utterance ? current : null);
  if (track) track.finish(end.reason);
  if (current && current.utterance === end.utterance) current = null;
  if (!hadUnderrun) penaltyMs = Math.max(0, penaltyMs - CLEAN_DECAY_MS);
}

function onPacket(buffer) {
  const view = new DataView(buffer);
  if (buffer.byteLength < 20 || view.getUint8(0) !== 1) return; // not a packet: ignore
  const packet = {
    final: (view.getUint8(1) & 1) !== 0,
    samples: view.getUint16(2, true),
    utterance: view.getUint32(4, true),
    sequence: view.getUint32(8, true),
    position: Number(view.getBigUint64(12, true)),
    data: new Uint8Array(buffer, 20),
  };
  counters.packetsReceived += 1;
  // Arrival jitter: how much later than the previous packet each one came, relative to their
  // audio positions (RFC 3550 §6.4.1 style; early arrivals, the relay's bursts, count as 0).
  const transit = performance.now() - packet.position * 1000 / SAMPLE_RATE;
  if (prevTransit !== null) {
    const late = Math.max(0, transit - prevTransit);
    counters.jitterMs += (late - counters.jitterMs) * JITTER_GAIN;
  }
  prevTransit = transit;
  if (current && current.utterance === packet.utterance) current.decode(packet);
}

// performance.now() time at which the context time `t` reaches the output.
function contextToPerformance(t) {
  const latencyMs = (ctx.outputLatency || 0) * 1000;
  const ts = ctx.getOutputTimestamp();
  if (ts.contextTime > 0 && ts.performanceTime > 0) {
    return ts.performanceTime + (t - ts.contextTime) * 1000 + latencyMs;
  }
  // No output timestamp yet (the context has only just started): from the render clock.
  return performance.now() - (ctx.currentTime - t) * 1000 + ctx.baseLatency * 1000 + latencyMs;
}

function onWorklet(m) {
  if (m.type === "capture") {
    if (captureWaiter) captureWaiter(m.data);
    captureWaiter = null;
    return;
  }
  counters.framesPlayed = m.framesPlayed;
  counters.underruns = m.underruns;
  counters.underrunMs = m.silenceFrames * 1000 / SAMPLE_RATE;
  counters.overflowFrames = m.overflowFrames;
  counters.state = m.state;
  counters.buffered = m.buffered;
  if (m.type === "started") {
    const t0 = headAt.get(m.utterance);
    if (counters.firstSoundMs === null && requestAt !== null && t0 !== undefined && t0 >= requestAt) {
      counters.firstSoundMs = Math.max(0, contextToPerformance(m.at) - requestAt);
    }
  } else if (m.type === "underrun") {
    // Where it ran dry (frames played so far) and when (ms since the request), the last few.
    if (counters.underrunLog.length < 16) {
      counters.underrunLog.push({ frame: m.framesPlayed, atMs: contextToPerformance(m.at) - (requestAt ?? 0) });
    }
    hadUnderrun = true;
    penaltyMs = Math.min(MAX_START_MS - MIN_START_MS, penaltyMs + UNDERRUN_STEP_MS);
    configure();
  } else if (m.type === "ended") {
    counters.utterancesEnded += 1;
    counters.lastEnded = { utterance: m.utterance, framesPlayed: m.framesPlayed };
    setStatus(`utterance ${m.utterance} played`);
  }
}

function render() {
  $("firstSound").textContent = counters.firstSoundMs === null ? "–" : `${counters.firstSoundMs.toFixed(0)} ms`;
  $("underruns").textContent = `${counters.underruns}` + (counters.underruns ? ` (${counters.underrunMs.toFixed(0)} ms)` : "");
  $("played").textContent = `${(counters.framesPlayed / SAMPLE_RATE).toFixed(2)} s`;
  $("startBuffer").textContent = `${counters.startBufferMs.toFixed(0)} ms (jitter ${counters.jitterMs.toFixed(1)} ms)`;
  $("packets").textContent = `${counters.packetsReceived}` + (counters.packetsLost ? ` (${counters.packetsLost} lost)` : "");
}

async function setupAudio() {
  ctx = new AudioContext({ sampleRate: SAMPLE_RATE, latencyHint: "interactive" });
  await ctx.audioWorklet.addModule(new URL("relay-worklet.js", import.meta.url));
  node = new AudioWorkletNode(ctx, "streamtts-player", {
    numberOfInputs: 0,
    numberOfOutputs: 1,
    outputChannelCount: [2],
  });
  node.port.onmessage = (event) => onWorklet(event.data);
  node.connect(ctx.destination);
  configure();
}

function connect() {
  const url = new URL("relay", document.baseURI);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const key = new URLSearchParams(location.search).get("key");
  if (key) url.searchParams.set("key", key);
  ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  ws.onmessage = (event) => {
    if (typeof event.data !== "string") { onPacket(event.data); return; }
    const m = JSON.parse(event.data);
    if (m.type === "ready") {
      const select = $("voice");
      select.replaceChildren(...m.voices.map((v) => new Option(v, v)));
      for (const id of ["join", "stop"]) $(id).disabled = false;
      $("speak").disabled = m.speak === false; // a listen-only relay: the app speaks
      setStatus("ready");
      resolveReady(m);
    } else if (m.type === "head") onHead(m);
    else if (m.type === "end") onEnd(m);
    else if (m.type === "error") {
      counters.errors.push(m.message);
      setStatus(m.message, true);
    }
  };
  ws.onclose = (event) => {
    counters.closeCode = event.code;
    setStatus(`disconnected (${event.code}${event.reason ? ": " + event.reason : ""})`, true);
  };
}

function send(message) {
  if (ctx.state !== "running") ctx.resume();
  requestAt = performance.now();
  counters.firstSoundMs = null;
  ws.send(JSON.stringify(message));
}

window.streamtts = {
  ready,
  stats: () => ({
    framesPlayed: counters.framesPlayed,
    underruns: counters.underruns,
    firstSoundMs: counters.firstSoundMs,
    packetsReceived: counters.packetsReceived,
    packetsLost: counters.packetsLost,
    underrunMs: counters.underrunMs,
    overflowFrames: counters.overflowFrames,
    decodeErrors: counters.decodeErrors,
    utterancesEnded: counters.utterancesEnded,
    lastEnded: counters.lastEnded,
    state: counters.state,
    buffered: counters.buffered,
    startBufferMs: counters.startBufferMs,
    jitterMs: counters.jitterMs,
    closeCode: counters.closeCode ?? null,
    lastHead: counters.lastHead ?? null,
    underrunLog: [...counters.underrunLog],
    errors: [...counters.errors],
  }),
  speak: (text, voice) => send({ type: "speak", text, voice: voice || $("voice").value || undefined }),
  join: () => send({ type: "join" }),
  stop: () => ws.send(JSON.stringify({ type: "stop" })),
  sendRaw: (data) => ws.send(data),
  // Test hooks: record the first channel as played (up to `seconds`), then fetch it as base64
  // of float32 little-endian samples.
  startCapture: (seconds) => node.port.postMessage({ type: "capture", frames: Math.round(seconds * SAMPLE_RATE) }),
  capture: () => new Promise((resolve) => {
    captureWaiter = (data) => {
      const bytes = new Uint8Array(data.buffer);
      let text = "";
      for (let i = 0; i < bytes.length; i += 0x8000) {
        text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
      }
      resolve(btoa(text));
    };
    node.port.postMessage({ type: "getCapture" });
  }),
};

$("speak").onclick = () => window.streamtts.speak($("text").value);
$("join").onclick = () => window.streamtts.join();
$("stop").onclick = () => window.streamtts.stop();
setInterval(render, 100);

await setupAudio();
connect();
