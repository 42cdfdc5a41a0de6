"""Training (needs the ``[train]`` extra): GAN augmentation, ViT teacher, MobileViT student, the shared fit loop."""
