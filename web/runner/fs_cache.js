// The weight cache of web/src/weight_cache.js on a filesystem, for the headless runner (`--cache-dir`): the same
// interface (get/put/delete/keys by sha256), one file per sha256. A file is written under a temporary name and
// renamed, so an interrupted or failed write never leaves a partial file under a sha256 name.

import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";

const SHA256 = /^[0-9a-f]{64}$/;

export class FsWeightCache {
  constructor(dir) {
    this.dir = dir;
  }

  file(sha256) {
    if (!SHA256.test(sha256)) throw new Error(`not a sha256: ${sha256}`);  // never a path out of the directory
    return path.join(this.dir, sha256);
  }

  async get(sha256) {
    try {
      const buf = await readFile(this.file(sha256));
      return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
    } catch (err) {
      if (err.code === "ENOENT") return null;
      throw err;
    }
  }

  async put(sha256, bytes) {
    await mkdir(this.dir, { recursive: true });
    const tmp = `${this.file(sha256)}.${process.pid}.tmp`;
    try {
      await writeFile(tmp, bytes);
      await rename(tmp, this.file(sha256));
    } catch (err) {
      await rm(tmp, { force: true });
      if (err.code === "ENOSPC" || err.code === "EDQUOT") {  // what the browser calls QuotaExceededError
        throw Object.assign(new Error(`${this.dir}: no space left (${err.code})`), { name: "QuotaExceededError" });
      }
      throw err;
    }
  }

  async delete(sha256) {
    await rm(this.file(sha256), { force: true });
  }

  async keys() {
    try {
      return (await readdir(this.dir)).filter((name) => SHA256.test(name));
    } catch (err) {
      if (err.code === "ENOENT") return [];
      throw err;
    }
  }
}
