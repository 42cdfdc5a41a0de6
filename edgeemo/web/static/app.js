// edgeemo browser demo: the bundle's raw-audio model (PCM window -> valence/arousal) in onnxruntime-web (WASM, 1 thread).
// Input: a dropped/chosen file (decoded by the browser at the bundle rate) or the microphone (AudioWorklet capture,
// resampled here by a windowed-sinc resampler). Windows of window_samples every hop_samples, EMA smoothing
// s = c*s + (1-c)*x, quadrant codes and mood words exactly as `edgeemo live`. Results are exposed on window.edgeemo for tests.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const { Resampler, Windower } = globalThis.EdgeemoDSP; // dsp.js
  const TRAIL_S = 60;
  const MAX_QUEUE = 8; // mic windows waiting for the model; older ones are dropped (and counted) beyond this
  const app = { cfg: null, session: null, series: null, mic: null, queue: [], busy: false };
  const pub = (window.edgeemo = { state: 'loading', message: '', windows: [], results: null, mic: null, config: null });

  class UserError extends Error {}

  function setState(state, message) {
    document.body.dataset.state = state;
    pub.state = state;
    if (message !== undefined) {
      pub.message = message;
      $('message').textContent = message;
    }
  }

  function fail(err) {
    console.error(err);
    const msg = err instanceof UserError ? err.message : `error: ${err && err.message ? err.message : err}`;
    setState('error', msg);
  }

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const s = document.createElement('script');
      s.src = src;
      s.onload = resolve;
      s.onerror = () => reject(new UserError(`could not load ${src}`));
      document.head.appendChild(s);
    });
  }

  // ------------------------------------------------------------------ the model
  function quadrant(v, a) { // Q1 +v+a, Q2 -v+a, Q3 -v-a, Q4 +v-a; exactly 0 counts as positive
    if (v >= 0) return a >= 0 ? 'Q1' : 'Q4';
    return a >= 0 ? 'Q2' : 'Q3';
  }

  function mood(v, a) { return app.cfg.quadrants[quadrant(v, a)]; }

  async function runWindow(pcm) {
    const cfg = app.cfg;
    const t0 = performance.now();
    const feeds = { [cfg.input]: new ort.Tensor('float32', pcm, [1, cfg.window_samples]) };
    const out = await app.session.run(feeds);
    const ms = performance.now() - t0;
    const va = out[cfg.output].data;
    return [va[0], va[1], ms];
  }

  function newSeries(source, smoothing) {
    app.series = { source, smoothing, ema: null, windows: [], inferenceMs: 0 };
    pub.windows = app.series.windows;
    pub.results = null;
    $('count').textContent = '0';
    draw();
  }

  function addWindow(index, v, a, ms) {
    const s = app.series;
    const cfg = app.cfg;
    const c = Math.fround(s.smoothing);
    if (c > 0) {
      // float32 arithmetic, as the Python runtime's EMA
      s.ema = s.ema === null ? [Math.fround(v), Math.fround(a)]
        : s.ema.map((e, i) => Math.fround(Math.fround(c * e) + Math.fround(Math.fround(1 - c) * [v, a][i])));
    } else {
      s.ema = [v, a];
    }
    const [sv, sa] = s.ema;
    const w = {
      index, time_s: (index * cfg.hop_samples + cfg.window_samples / 2) / cfg.sample_rate,
      valence: sv, arousal: sa, quadrant: quadrant(sv, sa), mood: mood(sv, sa), raw: [v, a], ms,
    };
    s.windows.push(w);
    s.inferenceMs += ms;
    $('valence').textContent = (sv >= 0 ? '+' : '') + sv.toFixed(3);
    $('arousal').textContent = (sa >= 0 ? '+' : '') + sa.toFixed(3);
    $('quadrant').textContent = `${w.mood} (${w.quadrant})`;
    $('count').textContent = String(s.windows.length);
    const meanMs = s.inferenceMs / s.windows.length;
    $('rtf').textContent = `${meanMs.toFixed(1)} ms per window (real-time factor ${(meanMs / 1000 / cfg.hop_seconds).toFixed(3)} of the hop)`;
    draw();
  }

  // ------------------------------------------------------------------ files
  function mixdown(buffer) {
    const n = buffer.length;
    const ch = buffer.numberOfChannels;
    if (ch === 1) return buffer.getChannelData(0).slice();
    const out = new Float32Array(n);
    for (let c = 0; c < ch; c++) {
      const d = buffer.getChannelData(c);
      for (let i = 0; i < n; i++) out[i] += d[i];
    }
    for (let i = 0; i < n; i++) out[i] = Math.fround(out[i] / ch);
    return out;
  }

  async function analyseFile(file) {
    const cfg = app.cfg;
    stopMic();
    setState('analysing', `Decoding ${file.name}…`);
    let decoded;
    try {
      const ctx = new OfflineAudioContext(1, 1, cfg.sample_rate); // decodes and resamples to the bundle rate
      decoded = await ctx.decodeAudioData(await file.arrayBuffer());
    } catch (e) {
      throw new UserError(`cannot decode ${file.name}: not an audio file this browser reads`);
    }
    let mono = mixdown(decoded);
    const seconds = mono.length / cfg.sample_rate;
    const W = cfg.window_samples;
    const hop = cfg.hop_samples;
    const padded = mono.length < W;
    if (padded) {
      const p = new Float32Array(W);
      p.set(mono);
      mono = p;
    }
    const n = Math.floor((mono.length - W) / hop) + 1;
    newSeries(file.name, smoothingValue());
    setState('analysing', `Analysing ${file.name}: ${n} window(s)…`);
    for (let i = 0; i < n; i++) {
      const [v, a, ms] = await runWindow(mono.slice(i * hop, i * hop + W));
      addWindow(i, v, a, ms);
      if (i % 4 === 3) await new Promise((r) => setTimeout(r, 0)); // let the page repaint
    }
    const s = app.series;
    const mean = (k) => s.windows.reduce((t, w) => t + w[k], 0) / s.windows.length;
    const mv = mean('valence');
    const ma = mean('arousal');
    pub.results = {
      source: file.name, duration_s: seconds, padded, decoded_sample_rate: decoded.sampleRate,
      windows: s.windows.length, valence: mv, arousal: ma, quadrant: quadrant(mv, ma), mood: mood(mv, ma),
      inference_ms: s.inferenceMs, realtime_factor: s.inferenceMs / 1000 / seconds,
    };
    setState('done', `${file.name}: ${seconds.toFixed(1)} s, ${n} window(s)${padded ? ' (shorter than one window: padded)' : ''}; ` +
      `mean valence ${mv.toFixed(3)}, arousal ${ma.toFixed(3)} (${pub.results.mood}, ${pub.results.quadrant}); ` +
      `inference ${s.inferenceMs.toFixed(0)} ms = ${pub.results.realtime_factor.toFixed(4)} x real time`);
  }

  // ------------------------------------------------------------------ microphone
  async function pump() {
    if (app.busy) return;
    app.busy = true;
    try {
      while (app.queue.length) {
        const w = app.queue.shift();
        const [v, a, ms] = await runWindow(w.pcm);
        if (app.mic && app.series) addWindow(w.index, v, a, ms);
      }
    } catch (e) {
      fail(e);
    } finally {
      app.busy = false;
    }
  }

  async function startMic() {
    const cfg = app.cfg;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new UserError('this browser gives no microphone access here (the page needs http://127.0.0.1 or https)');
    }
    stopMic();
    setState('starting', 'Asking for the microphone…');
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 },
      });
    } catch (e) {
      throw new UserError(`no microphone: ${e.message || e.name}`);
    }
    const ctx = new AudioContext();
    await ctx.audioWorklet.addModule('/static/worklet.js');
    const src = ctx.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(ctx, 'edgeemo-capture');
    const mute = ctx.createGain();
    mute.gain.value = 0;
    src.connect(node);
    node.connect(mute);
    mute.connect(ctx.destination);
    const resampler = new Resampler(ctx.sampleRate, cfg.sample_rate);
    const windower = new Windower(cfg.window_samples, cfg.hop_samples);
    const info = (pub.mic = { sample_rate: ctx.sampleRate, blocks: 0, samples_in: 0, samples_out: 0, dropped: 0, level_dbfs: -120 });
    app.mic = { ctx, stream, node };
    newSeries('microphone', smoothingValue());
    node.port.onmessage = (e) => {
      const x = e.data;
      info.blocks++;
      info.samples_in += x.length;
      let sum = 0;
      for (let i = 0; i < x.length; i++) sum += x[i] * x[i];
      info.level_dbfs = Math.max(-120, 20 * Math.log10(Math.sqrt(sum / x.length) + 1e-12));
      $('level').textContent = `${info.level_dbfs.toFixed(1)} dBFS at ${ctx.sampleRate} Hz`;
      const y = resampler.push(x);
      info.samples_out += y.length;
      for (const w of windower.push(y)) {
        app.queue.push(w);
        while (app.queue.length > MAX_QUEUE) {
          app.queue.shift();
          info.dropped++;
        }
      }
      pump();
    };
    $('stop').disabled = false;
    setState('listening', `Listening (${ctx.sampleRate} Hz, resampled to ${cfg.sample_rate} Hz): the first window needs ` +
      `${cfg.window_seconds.toFixed(2)} s of audio, then one every ${cfg.hop_seconds} s.`);
  }

  function stopMic() {
    if (!app.mic) return;
    app.mic.node.port.onmessage = null;
    app.mic.stream.getTracks().forEach((t) => t.stop());
    app.mic.ctx.close();
    app.mic = null;
    app.queue = [];
    $('stop').disabled = true;
    if (pub.state === 'listening') setState('ready', `Stopped after ${app.series ? app.series.windows.length : 0} window(s).`);
  }

  function smoothingValue() {
    const c = Number($('smoothing').value);
    if (!(c >= 0 && c < 1)) throw new UserError('smoothing must be in [0, 1) (0 = none)');
    return c;
  }

  // ------------------------------------------------------------------ drawing
  function draw() {
    const canvas = $('plane');
    const g = canvas.getContext('2d');
    const S = canvas.width;
    const m = 34;
    const R = (S - 2 * m) / 2;
    const cx = S / 2;
    const cy = S / 2;
    const px = (v) => cx + Math.max(-1, Math.min(1, v)) * R;
    const py = (a) => cy - Math.max(-1, Math.min(1, a)) * R;
    g.clearRect(0, 0, S, S);
    const tints = [['#fff4d6', 1, -1], ['#fde2e1', -1, -1], ['#e3e8f8', -1, 1], ['#e0f3e6', 1, 1]];
    for (const [col, sx, sy] of tints) {
      g.fillStyle = col;
      g.fillRect(sx > 0 ? cx : m, sy < 0 ? m : cy, R, R);
    }
    g.strokeStyle = '#9aa4b8';
    g.lineWidth = 1;
    g.strokeRect(m, m, 2 * R, 2 * R);
    g.beginPath();
    g.moveTo(m, cy); g.lineTo(S - m, cy); g.moveTo(cx, m); g.lineTo(cx, S - m);
    g.stroke();
    g.fillStyle = '#3b4456';
    g.font = '600 16px system-ui, sans-serif';
    const q = app.cfg ? app.cfg.quadrants : { Q1: 'happy', Q2: 'tense', Q3: 'sad', Q4: 'calm' };
    g.textAlign = 'right'; g.fillText(q.Q1, S - m - 8, m + 22); g.fillText(q.Q4, S - m - 8, S - m - 10);
    g.textAlign = 'left'; g.fillText(q.Q2, m + 8, m + 22); g.fillText(q.Q3, m + 8, S - m - 10);
    g.font = '13px system-ui, sans-serif';
    g.fillStyle = '#5a6478';
    g.textAlign = 'center';
    g.fillText('valence →', cx, S - 10);
    g.fillText('-1', m, S - 18); g.fillText('+1', S - m, S - 18);
    g.save(); g.translate(14, cy); g.rotate(-Math.PI / 2); g.fillText('arousal →', 0, 0); g.restore();
    const ws = app.series ? app.series.windows : [];
    if (!ws.length) return;
    const last = ws[ws.length - 1];
    const trail = ws.filter((w) => w.time_s >= last.time_s - TRAIL_S);
    for (let i = 1; i < trail.length; i++) {
      const age = (last.time_s - trail[i].time_s) / TRAIL_S;
      g.strokeStyle = `rgba(40, 70, 160, ${0.15 + 0.75 * (1 - age)})`;
      g.lineWidth = 2;
      g.beginPath();
      g.moveTo(px(trail[i - 1].valence), py(trail[i - 1].arousal));
      g.lineTo(px(trail[i].valence), py(trail[i].arousal));
      g.stroke();
    }
    g.fillStyle = '#1d3fa0';
    g.beginPath();
    g.arc(px(last.valence), py(last.arousal), 8, 0, 2 * Math.PI);
    g.fill();
    g.fillStyle = '#1d2330';
    g.textAlign = 'left';
    g.fillText(`${last.mood}  (${last.time_s.toFixed(1)} s)`, Math.min(px(last.valence) + 12, S - 110), py(last.arousal) - 10);
  }

  // ------------------------------------------------------------------ start-up
  async function init() {
    draw();
    const resp = await fetch('/bundle/config.json');
    if (!resp.ok) throw new UserError(`the server gave no bundle config (${resp.status})`);
    const cfg = (app.cfg = pub.config = await resp.json());
    $('bundle-name').textContent = cfg.name;
    $('contract').textContent = `Model ${cfg.model_file} (${(cfg.model_bytes / 1e6).toFixed(2)} MB): mono PCM at ${cfg.sample_rate} Hz, ` +
      `windows of ${cfg.window_samples} samples (${cfg.window_seconds.toFixed(2)} s) every ${cfg.hop_samples} samples ` +
      `(${cfg.hop_seconds} s) -> valence, arousal in [-1, 1]; trajectory of the last ${TRAIL_S} s.`;
    $('smoothing').value = String(cfg.smoothing);
    draw();
    if (!cfg.ort.available) throw new UserError(cfg.ort.message);
    await loadScript(cfg.ort.script);
    if (typeof ort === 'undefined') throw new UserError(`${cfg.ort.script} loaded but defines no onnxruntime-web ("ort")`);
    ort.env.wasm.numThreads = 1;
    ort.env.wasm.proxy = false;
    ort.env.wasm.wasmPaths = new URL(cfg.ort.wasm_paths, location.href).href; // absolute: relative paths fail
    setState('loading', `Loading ${cfg.model_file}…`);
    app.session = await ort.InferenceSession.create(cfg.model_url, { executionProviders: ['wasm'] });
    for (const id of ['mic', 'file']) $(id).disabled = false;
    setState('ready', 'Ready: use the microphone, or choose or drop an audio file.');
  }

  function guard(fn) {
    return (...args) => Promise.resolve().then(() => fn(...args)).catch(fail);
  }

  $('mic').addEventListener('click', guard(startMic));
  $('stop').addEventListener('click', guard(stopMic));
  $('file').addEventListener('change', guard((e) => e.target.files.length && analyseFile(e.target.files[0])));
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', guard((e) => {
    e.preventDefault();
    drop.classList.remove('over');
    if (!app.session) throw new UserError('the model is not loaded yet');
    if (e.dataTransfer.files.length) return analyseFile(e.dataTransfer.files[0]);
  }));
  guard(init)();
})();
