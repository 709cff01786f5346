// The runner's PNG encoder: a valid file (signature, chunk CRCs) whose pixels inflate back to the input.
import { test } from "node:test";
import assert from "node:assert/strict";
import { crc32, inflateSync } from "node:zlib";
import { encodePng } from "../runner/png.js";

test("encodePng writes IHDR, IDAT and IEND with correct CRCs and the unfiltered rows", () => {
  const width = 3, height = 2;
  const rgba = Uint8ClampedArray.from({ length: width * height * 4 }, (_, i) => (i * 37) % 256);
  const png = encodePng(rgba, width, height);
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const chunks = {};
  for (let at = 8; at < png.length;) {
    const len = png.readUInt32BE(at);
    const type = png.toString("latin1", at + 4, at + 8);
    assert.equal(png.readUInt32BE(at + 8 + len), crc32(png.subarray(at + 4, at + 8 + len)), `${type} CRC`);
    chunks[type] = png.subarray(at + 8, at + 8 + len);
    at += 12 + len;
  }
  assert.deepEqual(Object.keys(chunks), ["IHDR", "IDAT", "IEND"]);
  assert.equal(chunks.IHDR.readUInt32BE(0), width);
  assert.equal(chunks.IHDR.readUInt32BE(4), height);
  const rows = inflateSync(chunks.IDAT);
  for (let y = 0; y < height; y++) {
    assert.equal(rows[y * (width * 4 + 1)], 0);
    assert.deepEqual([...rows.subarray(y * (width * 4 + 1) + 1, (y + 1) * (width * 4 + 1))],
      [...rgba.subarray(y * width * 4, (y + 1) * width * 4)]);
  }
});
