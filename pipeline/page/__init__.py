"""The page side: the manifest, the tokenizer files, the site assembly, serving it, the headless GPU run, and
diffusers as the reference the page is compared with."""
