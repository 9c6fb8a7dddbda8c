"""Training side of the AELF U-Net (Liu et al. 2022): model, losses, data, training loop, evaluation, reports, the torch backend."""
