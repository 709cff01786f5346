"""The TVM toolchain: the checkout (with backports and this project's patches), the TVM build or wheel, TVM's web
runtime, each release's facts (``versions``), and the one seam to TVM's version-specific Python API (``tvm_api``,
with one adapter per API generation in ``tvm_versions/``)."""
