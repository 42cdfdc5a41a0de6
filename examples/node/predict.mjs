#!/usr/bin/env node
// edgeemo from Node: read a WAV, cut windows at the bundle's hop, run the raw-audio model (onnxruntime-node),
// print the per-window valence/arousal series and the song summary, like `edgeemo predict`.
//
//   npm ci --ignore-scripts          # once, in this folder (pinned onnxruntime-node from package-lock.json)
//   node predict.mjs song.wav [--bundle ../../export/reference] [--smoothing 0.5] [--json]
//
// The WAV must be at the bundle's sample rate (16000 Hz for the reference bundle): resampling stays outside
// the model, e.g. `sox in.wav -r 16000 out.wav` or `ffmpeg -i in.mp3 -ar 16000 out.wav`.
import { readFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const QUADRANTS = { Q1: 'happy', Q2: 'tense', Q3: 'sad', Q4: 'calm' };
const BATCH = 16;

class UsageError extends Error {}

function parseArgs(argv) {
  const opts = { bundle: resolve(HERE, '..', '..', 'export', 'reference'), smoothing: 0, json: false, file: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--bundle') opts.bundle = resolve(argv[++i] ?? '');
    else if (a === '--smoothing') opts.smoothing = Number(argv[++i]);
    else if (a === '--json') opts.json = true;
    else if (a === '-h' || a === '--help') {
      console.log('usage: node predict.mjs FILE.wav [--bundle DIR] [--smoothing C] [--json]');
      process.exit(0);
    } else if (a.startsWith('--')) throw new UsageError(`unknown option ${a}`);
    else if (opts.file === null) opts.file = a;
    else throw new UsageError('one WAV file at a time');
  }
  if (opts.file === null) throw new UsageError('usage: node predict.mjs FILE.wav [--bundle DIR] [--smoothing C] [--json]');
  if (!(opts.smoothing >= 0 && opts.smoothing < 1)) throw new UsageError('--smoothing must be in [0, 1) (0 = none)');
  return opts;
}

// ---------------------------------------------------------------- the bundle's raw-audio contract
function readContract(bundleDir) {
  let card;
  try {
    card = JSON.parse(readFileSync(join(bundleDir, 'card.json'), 'utf8'));
  } catch (e) {
    throw new UsageError(`no bundle card at ${join(bundleDir, 'card.json')} (${e.code || e.message})`);
  }
  const raw = card.raw_audio_model;
  if (!raw || !raw.files || !raw.files.length) {
    throw new UsageError(`${bundleDir}: this bundle has no raw-audio model; re-export it with \`edgeemo export\``);
  }
  return {
    model: join(bundleDir, raw.files[0]),
    input: raw.input.name,
    output: raw.output.name,
    sampleRate: raw.input.sample_rate,
    window: raw.window_samples,
    hop: raw.hop_samples,
  };
}

// ---------------------------------------------------------------- WAV (PCM 8/16/24/32-bit or float32)
function readWav(path) {
  let buf;
  try {
    buf = readFileSync(path);
  } catch (e) {
    throw new UsageError(`${path}: cannot read (${e.code || e.message})`);
  }
  if (buf.length < 12 || buf.toString('ascii', 0, 4) !== 'RIFF' || buf.toString('ascii', 8, 12) !== 'WAVE') {
    throw new UsageError(`${path}: not a RIFF/WAVE file`);
  }
  let fmt = null;
  let data = null;
  for (let off = 12; off + 8 <= buf.length;) {
    const id = buf.toString('ascii', off, off + 4);
    const size = buf.readUInt32LE(off + 4);
    const body = off + 8;
    if (id === 'fmt ') {
      let format = buf.readUInt16LE(body);
      if (format === 0xfffe && size >= 26) format = buf.readUInt16LE(body + 24); // WAVE_FORMAT_EXTENSIBLE
      fmt = { format, channels: buf.readUInt16LE(body + 2), rate: buf.readUInt32LE(body + 4), bits: buf.readUInt16LE(body + 14) };
    } else if (id === 'data') {
      data = buf.subarray(body, Math.min(buf.length, body + size));
    }
    off = body + size + (size % 2);
  }
  if (!fmt || !data) throw new UsageError(`${path}: WAV without fmt or data chunk`);
  const { format, channels, rate, bits } = fmt;
  const bytes = bits / 8;
  const frames = Math.floor(data.length / (bytes * channels));
  if (frames === 0) throw new UsageError(`${path}: no audio samples`);
  let read;
  if (format === 3 && bits === 32) read = (o) => data.readFloatLE(o);
  else if (format === 1 && bits === 16) read = (o) => data.readInt16LE(o) / 32768;
  else if (format === 1 && bits === 24) read = (o) => data.readIntLE(o, 3) / 8388608;
  else if (format === 1 && bits === 32) read = (o) => data.readInt32LE(o) / 2147483648;
  else if (format === 1 && bits === 8) read = (o) => (data.readUInt8(o) - 128) / 128;
  else throw new UsageError(`${path}: unsupported WAV encoding (format ${format}, ${bits} bit)`);
  const mono = new Float32Array(frames); // channel mean in float32, as the Python runtime downmixes
  for (let i = 0; i < frames; i++) {
    let s = 0;
    for (let c = 0; c < channels; c++) s = Math.fround(s + Math.fround(read((i * channels + c) * bytes)));
    mono[i] = Math.fround(s / channels);
  }
  for (let i = 0; i < frames; i++) {
    if (!Number.isFinite(mono[i])) throw new UsageError(`${path}: NaN/inf samples in the audio`);
  }
  return { samples: mono, rate, channels };
}

// ---------------------------------------------------------------- windows -> model -> series
function quadrant(v, a) {
  if (v >= 0) return a >= 0 ? QUADRANTS.Q1 : QUADRANTS.Q4;
  return a >= 0 ? QUADRANTS.Q2 : QUADRANTS.Q3;
}

async function predict(opts) {
  const contract = readContract(opts.bundle);
  const wav = readWav(opts.file);
  if (wav.rate !== contract.sampleRate) {
    throw new UsageError(
      `${opts.file}: ${wav.rate} Hz, the model takes ${contract.sampleRate} Hz: resample first ` +
        `(e.g. sox in.wav -r ${contract.sampleRate} out.wav)`,
    );
  }
  let ort;
  try {
    ort = await import('onnxruntime-node');
  } catch {
    throw new UsageError(`onnxruntime-node is not installed: run \`npm ci --ignore-scripts\` in ${HERE}`);
  }
  const session = await ort.InferenceSession.create(contract.model, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  const { window: W, hop } = contract;
  let x = wav.samples;
  const padded = x.length < W;
  if (padded) {
    const p = new Float32Array(W); // zero-pad a clip shorter than one window to one window
    p.set(x);
    x = p;
  }
  const n = Math.floor((x.length - W) / hop) + 1;
  const va = [];
  for (let start = 0; start < n; start += BATCH) {
    const b = Math.min(BATCH, n - start);
    const batch = new Float32Array(b * W);
    for (let i = 0; i < b; i++) batch.set(x.subarray((start + i) * hop, (start + i) * hop + W), i * W);
    const out = await session.run({ [contract.input]: new ort.Tensor('float32', batch, [b, W]) });
    const d = out[contract.output].data;
    for (let i = 0; i < b; i++) va.push([d[2 * i], d[2 * i + 1]]);
  }
  const c = Math.fround(opts.smoothing);
  let ema = null;
  const windows = va.map(([v, a], i) => {
    if (c > 0) {
      ema = ema === null ? [v, a] : ema.map((e, k) => Math.fround(Math.fround(c * e) + Math.fround(Math.fround(1 - c) * [v, a][k])));
      [v, a] = ema;
    }
    return { time_s: (i * hop + W / 2) / contract.sampleRate, valence: v, arousal: a, quadrant: quadrant(v, a) };
  });
  const mean = (k) => windows.reduce((s, w) => s + w[k], 0) / windows.length;
  const mv = mean('valence');
  const ma = mean('arousal');
  const summary = {
    valence: mv, arousal: ma, quadrant: quadrant(mv, ma), windows: windows.length,
    duration_s: wav.samples.length / wav.rate, padded,
  };
  return { path: opts.file, model: basename(contract.model), summary, smoothing: opts.smoothing, windows };
}

function table(p) {
  const s = p.summary;
  const sign = (x) => (x >= 0 ? '+' : '') + x.toFixed(3);
  const lines = [`${p.path}  (${s.duration_s.toFixed(1)} s, ${s.windows} window(s)${s.padded ? ', padded: shorter than one window' : ''}` +
    `${p.smoothing ? `, smoothing ${p.smoothing}` : ''}; ${p.model} in onnxruntime-node)`];
  lines.push(`  ${'time_s'.padStart(8)}  ${'valence'.padStart(8)}  ${'arousal'.padStart(8)}  mood`);
  for (const w of p.windows) lines.push(`  ${w.time_s.toFixed(2).padStart(8)}  ${sign(w.valence).padStart(8)}  ${sign(w.arousal).padStart(8)}  ${w.quadrant}`);
  lines.push(`  ${'mean'.padStart(8)}  ${sign(s.valence).padStart(8)}  ${sign(s.arousal).padStart(8)}  ${s.quadrant}`);
  return lines.join('\n');
}

try {
  const opts = parseArgs(process.argv.slice(2));
  const p = await predict(opts);
  console.log(opts.json ? JSON.stringify([p], null, 2) : table(p));
} catch (e) {
  console.error(`error: ${e instanceof UsageError ? e.message : (e && e.message) || e}`.split('\n')[0]);
  process.exit(2);
}
