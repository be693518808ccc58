"""The diffusion engine: SD1.5 + IP-Adapter with appearance-preserving controls, exactly tileable.

`engine` is the sampling loop; `models` loads the pipelines; `tiling` makes convolutions wrap
around; `reference_cache` keeps the per-texture reference work and plans what a call still does;
`allocator` keeps freed memory for reuse on glibc CPUs; the other modules are the controls the loop
hosts.
"""
