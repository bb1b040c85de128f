"""Rendering images with Stable Diffusion: prior-preservation class images and training samples."""
