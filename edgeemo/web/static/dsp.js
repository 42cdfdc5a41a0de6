// Stream DSP of the browser demo, shared by the page (a classic script: globalThis.EdgeemoDSP) and tests (Node vm).
// Resampler: streaming windowed-sinc (Hann window, 32 zero crossings, cutoff 0.97 x the lower Nyquist); pushing a
// signal in any chunking gives the same output. Windower: windows of W samples every hop samples, as
// edgeemo.rawaudio.PcmWindower.
'use strict';
(() => {
  class Resampler {
    // streaming windowed-sinc resampler: Hann-windowed sinc over `zeros` zero crossings each side, cutoff `cut` x the
    // lower Nyquist; the kernel is tabulated (TABLE steps per input sample, linear interpolation)
    constructor(srIn, srOut, zeros = 32, cut = 0.97) {
      this.identity = srIn === srOut;
      this.step = srIn / srOut;
      this.fc = 0.5 * Math.min(1, srOut / srIn) * cut; // cycles per input sample
      this.hw = Math.ceil(zeros / (2 * this.fc)); // half-width in input samples
      const TABLE = 256;
      this.res = TABLE;
      this.table = new Float64Array(this.hw * TABLE + 2);
      for (let i = 0; i < this.table.length; i++) this.table[i] = this.kernel(i / TABLE);
      this.buf = new Float32Array(this.hw);
      this.start = -this.hw; // absolute input index of buf[0]; the stream starts after hw zeros
      this.n = 0;
    }

    kernel(u) {
      const z = u / this.hw;
      if (Math.abs(z) >= 1) return 0;
      const x = 2 * this.fc * u;
      const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
      return 2 * this.fc * sinc * 0.5 * (1 + Math.cos(Math.PI * z));
    }

    tap(u) {
      const p = Math.abs(u) * this.res;
      const i = Math.floor(p);
      const f = p - i;
      return this.table[i] * (1 - f) + this.table[i + 1] * f;
    }

    push(x) {
      if (this.identity) return x.slice();
      const buf = new Float32Array(this.buf.length + x.length);
      buf.set(this.buf);
      buf.set(x, this.buf.length);
      const end = this.start + buf.length;
      const out = [];
      for (;;) {
        const t = this.n * this.step;
        const k0 = Math.floor(t);
        if (k0 + this.hw >= end) break;
        let s = 0;
        for (let k = k0 - this.hw + 1; k <= k0 + this.hw; k++) s += buf[k - this.start] * this.tap(t - k);
        out.push(s);
        this.n++;
      }
      const keep = Math.max(0, Math.floor(this.n * this.step) - this.hw + 1 - this.start);
      this.buf = buf.slice(keep);
      this.start += keep;
      return Float32Array.from(out);
    }
  }

  class Windower {
    constructor(W, hop) {
      this.W = W;
      this.hop = hop;
      this.buf = new Float32Array(0);
      this.skip = 0;
      this.index = 0;
    }

    push(x) {
      if (this.skip) {
        const d = Math.min(this.skip, x.length);
        x = x.subarray(d);
        this.skip -= d;
      }
      const buf = new Float32Array(this.buf.length + x.length);
      buf.set(this.buf);
      buf.set(x, this.buf.length);
      const out = [];
      let off = 0;
      while (buf.length - off >= this.W) {
        out.push({ index: this.index++, pcm: buf.slice(off, off + this.W) });
        off += this.hop;
      }
      this.skip = Math.max(0, off - buf.length);
      this.buf = buf.slice(Math.min(off, buf.length));
      return out;
    }
  }

  globalThis.EdgeemoDSP = { Resampler, Windower };
})();
