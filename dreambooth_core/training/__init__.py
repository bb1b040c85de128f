"""UNet fine-tuning in resumable chunks. Plain torch/diffusers: no prefect."""
