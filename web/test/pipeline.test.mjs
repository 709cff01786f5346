// The text-to-image loop with stand-in submodels: what each submodel receives, and the whole loop (seeded
// latents, init noise sigma, input scaling, scheduler steps) against diffusers' loop with the same stand-in UNet
// (fixture pipeline_loop.json).
import { test } from "node:test";
import assert from "node:assert/strict";
import { StableDiffusion } from "../src/pipeline.js";
import { readFixture } from "../testlib/fixtures.mjs";

const MANIFEST = { latent_size: 4, latent_channels: 4, max_length: 77, text_hidden: 8 };

/** Stand-ins: clip echoes ids, unet computes eps = 0.5 * x_in + t / 1000, vae returns latents as pixels. */
function fakes({ vaeValue } = {}) {
  const calls = { clip: [], unet: [], vae: [] };
  const f32 = Math.fround;
  const models = {
    clip: {
      async call(inputs) {
        calls.clip.push(inputs);
        return { data: new Float32Array(2 * 77 * 8), shape: [2, 77, 8] };
      },
    },
    unet: {
      async call(inputs) {
        calls.unet.push(inputs.map((x) => ({ ...x, data: Float32Array.from(x.data) })));
        const [x, t] = inputs;
        const tScaled = f32(t.data[0] / 1000);
        return { data: x.data.map((v) => f32(f32(0.5 * v) + tScaled)), shape: x.shape };
      },
    },
    vae: {
      async call([z]) {
        calls.vae.push(z);
        const data = new Float32Array(2 * 2 * 3).fill(vaeValue ?? 100);
        data[0] = z.data[0];
        return { data, shape: [1, 2, 2, 3] };
      },
    },
  };
  const tokenizer = { encode: (text) => new Int32Array(77).fill(text.length) };
  return { calls, sd: new StableDiffusion(MANIFEST, tokenizer, models) };
}

for (const ref of readFixture("pipeline_loop.json")) {
  test(`${ref.scheduler}: seeded loop ends where diffusers' loop ends`, async (t) => {
    const manifest = { ...MANIFEST, scheduler: ref.config };
    const { calls, sd } = fakes();
    sd.manifest = manifest;
    let finalLatents;
    sd.decode = async (latents) => { finalLatents = latents; return {}; };
    await sd.generate({ prompt: "p", seed: ref.seed, steps: ref.steps, scheduler: ref.scheduler });
    assert.equal(calls.unet.length, ref.steps);
    let worst = 0;
    finalLatents.forEach((v, i) => { worst = Math.max(worst, Math.abs(v - ref.final_latents[i])); });
    const scale = Math.max(1, ...ref.final_latents.map(Math.abs));
    t.diagnostic(`max abs diff ${worst.toExponential(2)} (scale ${scale.toFixed(2)})`);
    assert.ok(worst <= 1e-5 * scale, `max abs diff ${worst}`);
  });
}

test("clip gets [negative, prompt]; unet gets latents, timestep, embeddings, guidance", async () => {
  const { calls, sd } = fakes();
  sd.manifest.scheduler = {};
  const image = await sd.generate({ prompt: "abc", negativePrompt: "zz", steps: 3, guidance: 5, seed: 1 });
  const [ids] = calls.clip[0];
  assert.deepEqual(ids.shape, [2, 77]);
  assert.equal(ids.dtype, "int32");
  assert.equal(ids.data[0], 2); // row 0: the negative prompt
  assert.equal(ids.data[77], 3);
  assert.equal(calls.unet.length, 3);
  const [x, t, emb, g] = calls.unet[0];
  assert.deepEqual(x.shape, [1, 4, 4, 4]);
  assert.deepEqual(emb.shape, [2, 77, 8]);
  assert.equal(t.data.length, 1);
  assert.equal(g.data[0], 5);
  assert.deepEqual(calls.unet.map((c) => c[1].data[0]), [999, 666, 333]);
  assert.equal(image.width, 2);
  assert.equal(image.rgba.length, 2 * 2 * 4);
  assert.equal(image.rgba[3], 255);
});

test("given latents replace the seeded noise; a wrong size is refused", async () => {
  const { calls, sd } = fakes();
  sd.manifest.scheduler = {};
  const latents = new Float32Array(64).fill(0.25);
  await sd.generate({ prompt: "", steps: 1, latents });
  assert.deepEqual(Array.from(calls.unet[0][0].data), Array.from(latents)); // DPM: no input scaling
  await assert.rejects(sd.generate({ prompt: "", steps: 1, latents: new Float32Array(10) }), /10 values/);
});

test("previews decode every k steps", async () => {
  const { calls, sd } = fakes();
  sd.manifest.scheduler = {};
  const previews = [];
  await sd.generate({ prompt: "", steps: 7, previewEvery: 3 }, (info) => {
    if (info.preview) previews.push(info.step);
  });
  assert.deepEqual(previews, [3, 6]);
  assert.equal(calls.vae.length, 3);
});

test("a NaN image is an error, not a picture", async () => {
  const { sd } = fakes({ vaeValue: NaN });
  sd.manifest.scheduler = {};
  await assert.rejects(sd.generate({ prompt: "", steps: 1 }), /NaN/);
});
