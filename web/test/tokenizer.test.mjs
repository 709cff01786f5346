// The JS tokenizer must give exactly transformers' CLIPTokenizer ids (padded/truncated to 77) on the
// fixture prompts.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { ClipTokenizer, MAX_LENGTH } from "../src/tokenizer.js";
import { fixturePath, readFixture } from "../testlib/fixtures.mjs";

function loadTokenizer(name = "tokenizer") {
  const dir = fixturePath(name);
  const read = (name) => JSON.parse(fs.readFileSync(path.join(dir, name), "utf8"));
  return new ClipTokenizer(read("tokenizer.json"), read("tokenizer_config.json"));
}

for (const name of ["tokenizer", "tokenizer_sd2"]) {
  test(`${name}: JS ids equal transformers CLIPTokenizer ids on every fixture prompt`, () => {
    const tok = loadTokenizer(name);
    const { prompts, input_ids: expected } = readFixture(`${name}_ids.json`);
    assert.ok(prompts.length >= 50, `only ${prompts.length} prompts`);
    const mismatches = [];
    prompts.forEach((prompt, i) => {
      const got = Array.from(tok.encode(prompt));
      assert.equal(got.length, MAX_LENGTH);
      if (JSON.stringify(got) !== JSON.stringify(expected[i])) mismatches.push({ prompt, got, expected: expected[i] });
    });
    assert.deepEqual(mismatches, [], `${mismatches.length} of ${prompts.length} prompts differ`);
  });
}

test("the corpus covers truncation and padding", () => {
  const { input_ids: ids } = readFixture("tokenizer_ids.json");
  const eos = 49407;
  assert.ok(ids.some((row) => row[MAX_LENGTH - 1] === eos && row[MAX_LENGTH - 2] !== eos), "no truncated prompt");
  assert.ok(ids.some((row) => row[1] === eos), "no empty prompt");
});

test("the known SD ids of the astronaut prompt", () => {
  const ids = loadTokenizer().encode("a photo of an astronaut riding a horse");
  assert.deepEqual(Array.from(ids.slice(0, 11)), [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 49407, 49407]);
});

test("SD 2.x pads with \"!\" (id 0) after the end-of-text token", () => {
  const ids = loadTokenizer("tokenizer_sd2").encode("a photo of an astronaut riding a horse");
  assert.deepEqual(Array.from(ids.slice(0, 12)), [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 49407, 0, 0]);
  assert.equal(readFixture("tokenizer_sd2_ids.json").input_ids[0][11], 0);
});
