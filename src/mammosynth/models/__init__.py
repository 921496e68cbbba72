"""Models: classifier builders, conditional GANs, and the on-disk model format."""
