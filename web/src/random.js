// Seeded Gaussian noise for the initial latents, reproducing PyTorch's CPU generator:
// `torch.randn(n, generator=torch.Generator().manual_seed(seed))` (what diffusers' pipelines draw when given a
// CPU generator). The same seed on the page and in Python gives the same latents to within 1-2 float32 ulps
// (PyTorch evaluates log/sin/cos in float32 SIMD, we evaluate them in float64 and round).
//
// The algorithm: a 32-bit Mersenne Twister (MT19937) seeded like std::mt19937; each float is
// (next() & 0xFFFFFF) / 2^24; then Box-Muller on blocks of 16 uniforms, pairing element j with j+8
// (PyTorch's `normal_fill`). When n is not a multiple of 16 the last 16 values are redrawn and transformed again.

const N = 624;
const M = 397;

export class MersenneTwister {
  constructor(seed) {
    this.state = new Uint32Array(N);
    this.index = N;
    // PyTorch takes the seed as uint64 and keeps its low 32 bits for the twister.
    this.state[0] = Number(BigInt.asUintN(32, BigInt(seed)));
    for (let i = 1; i < N; i++) {
      const prev = this.state[i - 1] ^ (this.state[i - 1] >>> 30);
      this.state[i] = Math.imul(1812433253, prev) + i;
    }
  }

  twist() {
    const s = this.state;
    for (let i = 0; i < N; i++) {
      const y = (s[i] & 0x80000000) | (s[(i + 1) % N] & 0x7fffffff);
      s[i] = s[(i + M) % N] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
    }
    this.index = 0;
  }

  /** Next 32-bit unsigned integer. */
  nextUint32() {
    if (this.index >= N) this.twist();
    let y = this.state[this.index++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** Uniform float32 in [0, 1) with 24 random bits, as at::uniform_real_distribution<float>. */
  nextFloat() {
    return (this.nextUint32() & 0xffffff) / 16777216;
  }
}

const f32 = Math.fround;
const TWO_PI_F32 = Math.fround(2 * Math.PI);

function boxMuller16(data, offset) {
  for (let j = 0; j < 8; j++) {
    const u1 = f32(1 - data[offset + j]);
    const u2 = data[offset + j + 8];
    const radius = f32(Math.sqrt(f32(-2 * f32(Math.log(u1)))));
    const theta = f32(TWO_PI_F32 * u2);
    data[offset + j] = radius * f32(Math.cos(theta));
    data[offset + j + 8] = radius * f32(Math.sin(theta));
  }
}

/**
 * `n` standard normal float32 values, as torch.randn(n) with a CPU generator seeded with `seed`.
 * @param {number|bigint} seed non-negative integer
 * @param {number} n at least 16 (PyTorch uses another algorithm below 16)
 * @returns {Float32Array}
 */
export function randn(seed, n) {
  return randnFrom(new MersenneTwister(seed), n);
}

/**
 * The next `n` standard normal values of a generator: torch.randn(n, generator=g) called again on the same
 * generator continues its twister stream (what an ancestral scheduler's per-step noise does in diffusers).
 * @param {MersenneTwister} rng
 * @param {number} n at least 16
 */
export function randnFrom(rng, n) {
  if (!(n >= 16)) throw new Error(`randn needs at least 16 values, got ${n}`);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.nextFloat();
  for (let i = 0; i + 16 <= n; i += 16) boxMuller16(out, i);
  if (n % 16 !== 0) {
    for (let i = n - 16; i < n; i++) out[i] = rng.nextFloat();
    boxMuller16(out, n - 16);
  }
  return out;
}

/** A noise source `(n) => Float32Array` for a scheduler: the stream of torch.Generator().manual_seed(seed). */
export function normalStream(seed) {
  const rng = new MersenneTwister(seed);
  return (n) => randnFrom(rng, n);
}
