// Where the Python-made reference data lives (see tests/web/make_fixtures.py), and a loud failure when it is
// missing: a skipped comparison would hide a broken JS port.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const FIXTURES = process.env.WEBSD_FIXTURES ??
  path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "test", "fixtures");

export function fixturePath(name) {
  const p = path.join(FIXTURES, name);
  if (!fs.existsSync(p)) {
    throw new Error(`missing fixture ${p}: run \`python -m tests.web.make_fixtures\` from the project root ` +
      "(or set WEBSD_FIXTURES to a directory it wrote)");
  }
  return p;
}

export function readFixture(name) {
  return JSON.parse(fs.readFileSync(fixturePath(name), "utf8"));
}
