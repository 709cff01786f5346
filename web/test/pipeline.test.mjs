// The text-to-image loop with stand-in submodels: what each submodel receives, and the whole loop (seeded
// latents, init noise sigma, input scaling, scheduler steps) against diffusers' loop with the same stand-in UNet
// (fixture pipeline_loop.json).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Cancelled, StableDiffusion } from "../src/pipeline.js";
import { readFixture } from "../testlib/fixtures.mjs";

const MANIFEST = { latent_width: 4, latent_height: 4, latent_channels: 4, max_length: 77, text_hidden: 8 };

/** Stand-ins: clip echoes ids, unet computes eps = 0.5 * x_in + t / 1000, vae returns latents as pixels. */
function fakes({ vaeValue, manifest = MANIFEST } = {}) {
  const calls = { clip: [], unet: [], vae: [] };
  const f32 = Math.fround;
  const models = {
    clip: {
      async call(inputs) {
        calls.clip.push(inputs);
        const rows = inputs[0].shape[0];
        return { data: new Float32Array(rows * 77 * 8), shape: [rows, 77, 8] };
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
  return { calls, sd: new StableDiffusion(manifest, tokenizer, models) };
}

for (const ref of readFixture("pipeline_loop.json")) {
  test(`${ref.scheduler} ${ref.steps} steps: seeded loop ends where diffusers' loop ends`, async (t) => {
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

test("a non-square model: latents are 1 x C x latent_height x latent_width", () => {
  const sd = new StableDiffusion({ ...MANIFEST, latent_width: 6, latent_height: 4 }, {}, {});
  assert.deepEqual(sd.latentShape, [1, 4, 4, 6]);
  assert.equal(sd.initialLatents(1).length, 96);
  assert.throws(() => sd.initialLatents(1, new Float32Array(64)), /shape 1x4x4x6/);
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

test("an abort stops the loop within one step, and the next generation runs in full", async () => {
  const { calls, sd } = fakes();
  sd.manifest.scheduler = {};
  const controller = new AbortController();
  const steps = [];
  await assert.rejects(sd.generate({ prompt: "", steps: 10 }, (info) => {
    steps.push(info.step);
    if (info.step === 3) controller.abort();  // as the Cancel button does, while step 3's result comes back
  }, controller.signal), (e) => e instanceof Cancelled);
  assert.deepEqual(steps, [1, 2, 3]);
  assert.equal(calls.unet.length, 3);
  assert.equal(calls.vae.length, 0);
  await sd.generate({ prompt: "", steps: 4 });
  assert.equal(calls.unet.length, 3 + 4);
});

test("a model without classifier-free guidance: prompt alone, batch-1 unet without a guidance input", async () => {
  const manifest = { ...MANIFEST, scheduler: { timestep_spacing: "trailing" }, classifier_free: false,
    defaults: { steps: 1, guidance: 0, scheduler: "euler-a" } };
  const { calls, sd } = fakes({ manifest });
  await sd.generate({ prompt: "abc", negativePrompt: "ignored" });
  const [ids] = calls.clip[0];
  assert.deepEqual(ids.shape, [1, 77]);
  assert.equal(ids.data[0], 3); // the prompt, no negative row
  assert.equal(calls.unet.length, 1); // the manifest's default: one step
  assert.equal(calls.unet[0].length, 3);
  const [x, t, emb] = calls.unet[0];
  assert.deepEqual(x.shape, [1, 4, 4, 4]);
  assert.deepEqual(emb.shape, [1, 77, 8]);
  assert.equal(t.data[0], 999); // trailing spacing starts at the last train step
});

test("the manifest's defaults apply, options override them; guidance <= 1 means the prompt alone", async () => {
  const manifest = { ...MANIFEST, scheduler: {}, defaults: { steps: 2, guidance: 3, scheduler: "euler" } };
  const { calls, sd } = fakes({ manifest });
  await sd.generate({ prompt: "abc" });
  assert.equal(calls.unet.length, 2);
  assert.equal(calls.unet[0][3].data[0], 3);
  await sd.generate({ prompt: "abc", steps: 1, guidance: 0 });
  assert.equal(calls.unet.length, 3);
  assert.equal(calls.unet[2][3].data[0], 1); // u + 1 * (c - u): diffusers' guidance_scale <= 1 output
});

test("a UNet that embeds the guidance scale (LCM): prompt alone, batch 1, the scale given as is", async () => {
  const manifest = { ...MANIFEST, scheduler: {}, classifier_free: false, guidance_embedding: true,
    defaults: { steps: 4, guidance: 8, scheduler: "lcm" } };
  const { calls, sd } = fakes({ manifest });
  await sd.generate({ prompt: "abc", negativePrompt: "ignored", seed: 3 });
  assert.deepEqual(calls.clip[0][0].shape, [1, 77]);
  assert.equal(calls.unet.length, 4);
  const [, t, emb, g] = calls.unet[0];
  assert.deepEqual(emb.shape, [1, 77, 8]);
  assert.equal(g.data[0], 8);
  assert.equal(t.data[0], 999); // LCM's schedule starts at the last train step
  await sd.generate({ prompt: "abc", guidance: 0.5, steps: 1 });
  assert.equal(calls.unet[4][3].data[0], 0.5); // not raised to 1: the embedding takes any scale
});
