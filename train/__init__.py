"""Training side of the AELF U-Net (Liu et al. 2022): model, losses, data, metrics, training loop."""
