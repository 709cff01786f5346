// Static checks of the page: every element ui.js looks up exists in index.html, and every module the page
// imports exists (a typo here would only show in a browser).
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const WEB = path.join(path.dirname(fileURLToPath(import.meta.url)), "..");
const html = fs.readFileSync(path.join(WEB, "index.html"), "utf8");

test("ids used by ui.js exist in index.html", () => {
  const ui = fs.readFileSync(path.join(WEB, "src", "ui.js"), "utf8");
  const used = [...ui.matchAll(/\$\("([\w-]+)"\)/g)].map((m) => m[1]);
  assert.ok(used.length > 10);
  const missing = [...new Set(used)].filter((id) => !html.includes(`id="${id}"`));
  assert.deepEqual(missing, []);
});

test("relative imports of every module resolve to files", () => {
  const srcFiles = fs.readdirSync(path.join(WEB, "src"), { recursive: true }).filter((f) => f.endsWith(".js"));
  for (const f of srcFiles) {
    const text = fs.readFileSync(path.join(WEB, "src", f), "utf8");
    for (const [, spec] of text.matchAll(/from "(\.[^"]+)"/g)) {
      assert.ok(fs.existsSync(path.join(WEB, "src", path.dirname(f), spec)), `${f} imports missing ${spec}`);
    }
  }
});

test("no module imports a bare name statically: the page's worker has no import map to resolve it", () => {
  const srcFiles = fs.readdirSync(path.join(WEB, "src"), { recursive: true }).filter((f) => f.endsWith(".js"));
  for (const f of srcFiles) {
    const text = fs.readFileSync(path.join(WEB, "src", f), "utf8");
    const bare = [...text.matchAll(/^import [^;]*from "([^."][^"]*)"/gm)].map((m) => m[1]);
    assert.deepEqual(bare, [], `${f} imports ${bare}`);
  }
});

test("the page's module entry is loaded, and the worker loads the tvmjs bundle next to the page", () => {
  assert.match(html, /<script type="module" src="src\/ui.js"><\/script>/);
  const worker = fs.readFileSync(path.join(WEB, "src", "worker.js"), "utf8");
  assert.match(worker, /new URL\("\.\.\/tvmjs\.bundle\.js", import\.meta\.url\)/);
  const client = fs.readFileSync(path.join(WEB, "src", "worker_client.js"), "utf8");
  assert.match(client, /new URL\("\.\/worker\.js", import\.meta\.url\)/);
});
