// The JS tokenizer must give exactly transformers' CLIPTokenizer ids (padded/truncated to 77) on the
// fixture prompts.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { ClipTokenizer, MAX_LENGTH } from "../src/tokenizer.js";
import { fixturePath, readFixture } from "../testlib/fixtures.mjs";

function loadTokenizer() {
  const dir = fixturePath("tokenizer");
  const read = (name) => JSON.parse(fs.readFileSync(path.join(dir, name), "utf8"));
  return new ClipTokenizer(read("tokenizer.json"), read("tokenizer_config.json"));
}

test("JS ids equal transformers CLIPTokenizer ids on every fixture prompt", () => {
  const tok = loadTokenizer();
  const { prompts, input_ids: expected } = readFixture("tokenizer_ids.json");
  assert.ok(prompts.length >= 50, `only ${prompts.length} prompts`);
  const mismatches = [];
  prompts.forEach((prompt, i) => {
    const got = Array.from(tok.encode(prompt));
    assert.equal(got.length, MAX_LENGTH);
    if (JSON.stringify(got) !== JSON.stringify(expected[i])) mismatches.push({ prompt, got, expected: expected[i] });
  });
  assert.deepEqual(mismatches, [], `${mismatches.length} of ${prompts.length} prompts differ`);
});

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
