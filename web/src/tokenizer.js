// CLIP text tokenizer: the Hugging Face tokenizers.js library runs the tokenizer.json written by
// pipeline/page/tokenizer.py (normalizer, pre-tokenizer and BPE exactly as transformers' CLIPTokenizer), and this
// module adds what diffusers' pipeline asks of it: <|startoftext|> ids <|endoftext|>, truncated to 77 tokens and
// padded with the pad token (<|endoftext|> for Stable Diffusion v1.x).
//
// Where tokenizers.js comes from: in Node the npm package; in a browser the copy the site stage puts at
// vendor/tokenizers.mjs, by URL, because the page's worker has no import map to resolve a bare name.
const IN_NODE = typeof process !== "undefined" && Boolean(process.versions?.node);
const { Tokenizer } = await import(IN_NODE ? "@huggingface/tokenizers"
  : new URL("../vendor/tokenizers.mjs", import.meta.url).href);

export const MAX_LENGTH = 77;

export class ClipTokenizer {
  /**
   * @param {object} tokenizerJson parsed tokenizer.json
   * @param {object} tokenizerConfig parsed tokenizer_config.json (bos/eos/pad tokens, model_max_length)
   */
  constructor(tokenizerJson, tokenizerConfig = {}) {
    this.tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
    this.maxLength = tokenizerConfig.model_max_length ?? MAX_LENGTH;
    const idOf = (field, fallback) => {
      const token = tokenizerConfig[field] ?? fallback;
      const id = this.tokenizer.token_to_id(token);
      if (id === undefined || id === null) {
        throw new Error(`tokenizer: ${field} ${JSON.stringify(token)} is not in the vocab`);
      }
      return id;
    };
    this.bosId = idOf("bos_token", "<|startoftext|>");
    this.eosId = idOf("eos_token", "<|endoftext|>");
    this.padId = idOf("pad_token", "<|endoftext|>");
  }

  /**
   * Load tokenizer.json and tokenizer_config.json from a directory URL.
   * @param {string|URL} baseUrl directory, ending with "/"
   * @param {(url: string) => Promise<Response>} fetchFn
   */
  static async load(baseUrl, fetchFn = fetch) {
    const get = async (name) => {
      const url = new URL(name, baseUrl).href;
      const res = await fetchFn(url);
      if (!res.ok) throw new Error(`tokenizer: ${url} answered HTTP ${res.status}`);
      return res.json();
    };
    const [json, config] = await Promise.all([get("tokenizer.json"), get("tokenizer_config.json")]);
    return new ClipTokenizer(json, config);
  }

  /**
   * Token ids of one prompt: [bos, ...ids (at most maxLength - 2), eos, pad...], length maxLength.
   * @param {string} text
   * @returns {Int32Array}
   */
  encode(text) {
    // The Rust tokenizer lowercases one character at a time, so Σ always becomes σ; JavaScript's toLowerCase()
    // (used by tokenizers.js) applies Unicode's Final_Sigma rule and makes a word-final Σ into ς, another token.
    const { ids } = this.tokenizer.encode(text.replaceAll("\u03a3", "\u03c3"), { add_special_tokens: false });
    const body = ids.slice(0, this.maxLength - 2);
    const out = new Int32Array(this.maxLength).fill(this.padId);
    out[0] = this.bosId;
    out.set(body, 1);
    out[body.length + 1] = this.eosId;
    return out;
  }
}
