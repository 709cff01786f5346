// Debian's headless Chromium through playwright-core, as the browser tests' drivers (drive_page.cjs,
// drive_cache.cjs) start it.
"use strict";

const path = require("node:path");

const WEB = path.resolve(__dirname, "..", "..", "web");
let chromium;
try {
  ({ chromium } = require(path.join(WEB, "node_modules", "playwright-core")));
} catch (err) {
  console.error("playwright-core is not installed: run `npm install` in web/ (it is a devDependency there)");
  process.exit(3);
}

// Chromium's WebGPU on SwiftShader (CPU) needs --enable-unsafe-webgpu; the rest keeps a headless run quiet,
// offline and independent of the machine's profile (no sandbox: tests may run as root in a container).
const CHROMIUM_ARGS = [
  "--enable-unsafe-webgpu",
  "--no-sandbox",
  "--disable-dev-shm-usage",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const EXECUTABLE = process.env.WEBSD_CHROMIUM || "/usr/bin/chromium";

/** A browser on the profile directory `userDataDir` (a persistent context is the only way to choose it). */
async function launch(userDataDir, timeout) {
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: EXECUTABLE, headless: true, args: CHROMIUM_ARGS, viewport: { width: 900, height: 1000 },
  });
  const page = context.pages()[0] ?? await context.newPage();
  page.setDefaultTimeout(timeout);
  return { context, page };
}

/** Collect the page's (and its worker's) errors and warnings into `messages`. */
function watchConsole(page, messages) {
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") messages.push(`${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => messages.push(`pageerror: ${e.message}`));
  page.on("worker", (w) => w.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") messages.push(`worker ${m.type()}: ${m.text()}`);
  }));
}

module.exports = { launch, watchConsole };
