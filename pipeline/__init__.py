"""websd: a doit pipeline that turns Stable Diffusion into a WebGPU web page.

Each stage is a module with plain functions; ``dodo.py`` only wires them into doit tasks.
"""
