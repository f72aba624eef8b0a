"""Plain-PyTorch ops of the StyleGAN-XL synthesis network, one op per module."""
