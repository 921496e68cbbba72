"""mammosynth: does conditional-GAN synthetic data help a breast-mass classifier? Honest answers."""

__version__ = "0.1.0"
